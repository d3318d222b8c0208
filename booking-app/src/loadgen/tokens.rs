//! loadgen's identities: one HS256 token per simulated user (`user-N`, minted on first use from
//! AUTH_HS256_SECRET_FILE and reused), and an admin token for creating and reading the sale.
//! Memory is bounded whatever `--users` says: up to `CACHED_USERS` users each keep their token;
//! past that (the bench's billion users, each seen about once) every request mints its own.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use crate::auth::{AuthSetupError, Minter};

/// Longer than any run (a capacity search included): a token never expires mid-run.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The `sub` of loadgen's admin token.
pub const ADMIN_USER: &str = "loadgen";
/// Most users whose tokens are kept (~250 B each: at most ~16 MiB). A slot per user was
/// allocated up front before, and `--users 1000000000` took 21 GiB until the OOM killer came.
const CACHED_USERS: u32 = 1 << 16;

pub struct Tokens {
    minter: Minter,
    admin: String,
    users: Vec<OnceLock<String>>,
}

impl Tokens {
    /// Tokens for users `0..users` (kept when there are at most `CACHED_USERS` of them).
    pub fn new(minter: Minter, users: u32) -> Result<Self, AuthSetupError> {
        let admin = format!("Bearer {}", minter.token(ADMIN_USER, true, TOKEN_TTL)?);
        let kept = if users <= CACHED_USERS { users } else { 0 };
        Ok(Self {
            minter,
            admin,
            users: (0..kept).map(|_| OnceLock::new()).collect(),
        })
    }

    /// `Authorization` value of the admin token.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// `Authorization` value for user index `user` (`user_id`): kept, or minted for this call.
    pub fn user(&self, user: u32) -> Cow<'_, str> {
        match self.users.get(user as usize) {
            Some(cell) => Cow::Borrowed(cell.get_or_init(|| self.mint(&user_id(user)))),
            None => Cow::Owned(self.mint(&user_id(user))),
        }
    }

    /// `Authorization` value for any user id.
    pub fn named(&self, user: &str) -> String {
        self.mint(user)
    }

    fn mint(&self, user: &str) -> String {
        // Signing with a key that signed the admin token cannot fail.
        let token = self
            .minter
            .token(user, false, TOKEN_TTL)
            .expect("HS256 signing");
        format!("Bearer {token}")
    }
}

/// The `user_id` loadgen sends for a user index (its token's `sub`).
pub fn user_id(user: u32) -> String {
    format!("user-{user}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthConfig;

    fn minter() -> Minter {
        let dir = std::env::temp_dir().join(format!("loadgen-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "s".repeat(32)).unwrap();
        let config = AuthConfig {
            auth_hs256_secret_file: Some(secret),
            ..AuthConfig::default()
        };
        Minter::from_config(&config).unwrap().unwrap()
    }

    #[test]
    fn a_billion_users_cost_no_memory_up_front_and_each_still_gets_a_token() {
        let tokens = Tokens::new(minter(), 1_000_000_000).unwrap();
        assert!(tokens.users.is_empty());
        let far = tokens.user(999_999_999);
        assert!(matches!(far, Cow::Owned(_)));
        assert!(far.starts_with("Bearer "));
    }

    #[test]
    fn a_small_sale_keeps_each_users_token() {
        let tokens = Tokens::new(minter(), 100).unwrap();
        let first = tokens.user(7);
        assert!(matches!(first, Cow::Borrowed(_)));
        assert_eq!(first, tokens.user(7));
        assert_ne!(tokens.user(7), tokens.user(8));
    }
}
