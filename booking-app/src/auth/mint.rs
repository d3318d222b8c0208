//! Local HS256 tokens signed with AUTH_HS256_SECRET_FILE: `booking-app token` for people and
//! scripts (README curl examples, `make demo`, `make bench`), and loadgen's simulated users.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::{ADMIN_SCOPE, AuthConfig, AuthSetupError};

/// `booking-app token --user alice [--admin] [--ttl 1h] [--count N]`: prints tokens, one a line.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The user (`sub`) of the token; with --count N the users are `<user>-0` … `<user>-<N-1>`
    /// (loadgen's users are `user-0` …).
    #[arg(long)]
    pub user: String,
    /// Grant the admin scope (`flashsale:admin`): create events, read every booking.
    #[arg(long)]
    pub admin: bool,
    /// How long the token is valid, e.g. `1h`, `30m`, `90s`.
    #[arg(long, default_value = "1h", value_parser = crate::duration::parse_duration)]
    pub ttl: Duration,
    /// Mint one token for each of N users instead of one for --user.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: Option<u32>,
    #[command(flatten)]
    pub auth: AuthConfig,
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// Signs tokens the way `Verifier` checks them (same issuer and audience settings).
pub struct Minter {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Minter {
    /// None when no AUTH_HS256_SECRET_FILE is configured.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, AuthSetupError> {
        let Some(secret) = config.hs256_secret()? else {
            return Ok(None);
        };
        Ok(Some(Self {
            key: EncodingKey::from_secret(&secret)
                .map_err(|e| AuthSetupError::Sign(e.to_string()))?,
            issuer: config.auth_issuer.clone(),
            audience: config.auth_audience.clone(),
        }))
    }

    pub fn token(&self, user: &str, admin: bool, ttl: Duration) -> Result<String, AuthSetupError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = MintClaims {
            sub: user,
            iat: now,
            exp: now + ttl.as_secs().max(1),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            scope: admin.then_some(ADMIN_SCOPE),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| AuthSetupError::Sign(e.to_string()))
    }
}

/// `booking-app token`.
pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let minter = Minter::from_config(&args.auth)?.ok_or(AuthSetupError::NoSecret)?;
    let mut out = std::io::stdout().lock();
    match args.count {
        None => writeln!(out, "{}", minter.token(&args.user, args.admin, args.ttl)?)?,
        Some(count) => {
            for i in 0..count {
                let user = format!("{}-{i}", args.user);
                writeln!(out, "{}", minter.token(&user, args.admin, args.ttl)?)?;
            }
        }
    }
    Ok(())
}
