//! loadgen's identities: one HS256 token per simulated user (`user-N`, minted on first use from
//! AUTH_HS256_SECRET_FILE and reused), and an admin token for creating and reading the sale.

use std::sync::OnceLock;
use std::time::Duration;

use crate::auth::{AuthSetupError, Minter};

/// Longer than any run (a capacity search included): a token never expires mid-run.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The `sub` of loadgen's admin token.
pub const ADMIN_USER: &str = "loadgen";

pub struct Tokens {
    minter: Minter,
    admin: String,
    users: Vec<OnceLock<String>>,
}

impl Tokens {
    /// Tokens for users `0..users`.
    pub fn new(minter: Minter, users: u32) -> Result<Self, AuthSetupError> {
        let admin = format!("Bearer {}", minter.token(ADMIN_USER, true, TOKEN_TTL)?);
        Ok(Self {
            minter,
            admin,
            users: (0..users).map(|_| OnceLock::new()).collect(),
        })
    }

    /// `Authorization` value of the admin token.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// `Authorization` value for user index `user` (`user_id`).
    pub fn user(&self, user: u32) -> &str {
        match self.users.get(user as usize) {
            Some(cell) => cell.get_or_init(|| self.mint(&user_id(user))),
            None => panic!("user index {user} beyond --users"),
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
