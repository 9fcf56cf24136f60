//! SASL on SASL_PLAINTEXT and SASL_SSL listeners: SaslHandshake (v1) names the mechanism,
//! SaslAuthenticate carries its tokens. Until a connection has authenticated it may send only
//! ApiVersions, SaslHandshake and SaslAuthenticate; anything else closes it.
//!
//! PLAIN checks a user's password against the PBKDF2-HMAC-SHA256 hash in
//! `sasl_plain_users_file` (passwords are never stored). A failed attempt is answered after
//! `connection_failed_authentication_delay_ms` and the connection then closes; the hashing
//! runs on the blocking pool, a few at a time, so a flood of attempts from one host slows
//! only the attempts.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::handler::Ctx;

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// Password hashes computed at once (each is deliberately slow).
const CONCURRENT_CHECKS: usize = 2;

/// One user of `sasl_plain_users_file`.
struct User {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

/// The PLAIN users, loaded at startup.
pub struct PlainUsers {
    users: HashMap<String, User>,
    checks: tokio::sync::Semaphore,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl PlainUsers {
    pub fn load(path: &Path) -> anyhow::Result<PlainUsers> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sasl_plain_users_file {}", path.display()))?;
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("{} line {}", path.display(), n + 1);
            let f: Vec<&str> = line.split(':').collect();
            let [name, scheme, iterations, salt, hash] = f[..] else {
                bail!(
                    "{}: not name:pbkdf2-sha256:ITERATIONS:SALT_HEX:HASH_HEX",
                    at()
                );
            };
            if scheme != "pbkdf2-sha256" {
                bail!("{}: unknown hash scheme {scheme:?} (pbkdf2-sha256)", at());
            }
            let iterations: u32 = iterations
                .parse()
                .ok()
                .filter(|i| (1000..=10_000_000).contains(i))
                .with_context(|| format!("{}: iterations must be 1000 to 10000000", at()))?;
            let (Some(salt), Some(hash)) = (unhex(salt), unhex(hash)) else {
                bail!("{}: salt and hash must be hex", at());
            };
            if salt.len() < 8 || hash.len() != 32 {
                bail!("{}: the salt needs 8 bytes or more, the hash 32", at());
            }
            let user = User {
                iterations: NonZeroU32::new(iterations).expect("checked above"),
                salt,
                hash,
            };
            if users.insert(name.to_string(), user).is_some() {
                bail!("{}: user {name} is listed twice", at());
            }
        }
        Ok(PlainUsers {
            users,
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
        })
    }

    /// Whether `password` is `name`'s.
    pub async fn check(self: &Arc<Self>, name: &str, password: &[u8]) -> bool {
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let users = self.clone();
        let (name, password) = (name.to_string(), password.to_vec());
        tokio::task::spawn_blocking(move || {
            // An unknown user costs the same work as a known one.
            let fallback = User {
                iterations: NonZeroU32::new(4096).expect("non-zero"),
                salt: vec![0; 16],
                hash: vec![0xff; 32],
            };
            let (user, known) = match users.users.get(&name) {
                Some(u) => (u, true),
                None => (&fallback, false),
            };
            let ok = aws_lc_rs::pbkdf2::verify(
                aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
                user.iterations,
                &user.salt,
                &password,
                &user.hash,
            )
            .is_ok();
            ok && known
        })
        .await
        .unwrap_or(false)
    }
}

/// A SASL connection's progress.
#[derive(Debug, Default)]
pub struct SaslState {
    mechanism: Option<String>,
    pub authenticated: bool,
    /// Authentication failed: the connection closes after its answer.
    pub failed: bool,
}

impl SaslState {
    /// The mechanisms offered, in `ctx.config` order.
    fn mechanisms(ctx: &Ctx) -> Vec<StrBytes> {
        ctx.config
            .sasl_enabled_mechanisms
            .split(',')
            .map(|m| StrBytes::from_string(m.trim().to_string()))
            .collect()
    }

    pub fn handshake(&mut self, ctx: &Ctx, req: SaslHandshakeRequest) -> SaslHandshakeResponse {
        let offered = Self::mechanisms(ctx);
        let response = SaslHandshakeResponse::default().with_mechanisms(offered.clone());
        if self.authenticated || self.mechanism.is_some() {
            return response.with_error_code(ILLEGAL_SASL_STATE);
        }
        if !offered.iter().any(|m| **m == *req.mechanism) {
            return response.with_error_code(UNSUPPORTED_SASL_MECHANISM);
        }
        self.mechanism = Some(req.mechanism.to_string());
        response
    }

    /// Checks the PLAIN token (`authzid NUL authcid NUL password`); on success returns the
    /// principal. On failure the caller answers after the delay and closes the connection.
    pub async fn authenticate(
        &mut self,
        ctx: &Ctx,
        req: SaslAuthenticateRequest,
    ) -> (SaslAuthenticateResponse, Option<String>) {
        let fail = |code: i16, message: &str| {
            (
                SaslAuthenticateResponse::default()
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message.to_string()))),
                None,
            )
        };
        if self.authenticated || self.mechanism.as_deref() != Some("PLAIN") {
            return fail(
                ILLEGAL_SASL_STATE,
                "SaslAuthenticate before a PLAIN SaslHandshake",
            );
        }
        let Some(users) = ctx.plain_users.as_ref() else {
            return fail(SASL_AUTHENTICATION_FAILED, "no PLAIN users are configured");
        };
        let parts: Vec<&[u8]> = req.auth_bytes.split(|b| *b == 0).collect();
        let [authzid, authcid, password] = parts[..] else {
            return fail(SASL_AUTHENTICATION_FAILED, "malformed PLAIN token");
        };
        let Ok(name) = std::str::from_utf8(authcid) else {
            return fail(SASL_AUTHENTICATION_FAILED, "malformed PLAIN token");
        };
        if !authzid.is_empty() && authzid != authcid {
            return fail(
                SASL_AUTHENTICATION_FAILED,
                "authorization id must be empty or the user's own",
            );
        }
        if name.is_empty() || !users.check(name, password).await {
            ::metrics::counter!("strata_sasl_authentications_total", "result" => "failed")
                .increment(1);
            return fail(
                SASL_AUTHENTICATION_FAILED,
                "Authentication failed: Invalid username or password",
            );
        }
        ::metrics::counter!("strata_sasl_authentications_total", "result" => "ok").increment(1);
        self.authenticated = true;
        (
            SaslAuthenticateResponse::default(),
            Some(format!("User:{name}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, password: &str) -> String {
        let salt = b"0123456789abcdef";
        let mut hash = [0u8; 32];
        aws_lc_rs::pbkdf2::derive(
            aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(4096).unwrap(),
            salt,
            password.as_bytes(),
            &mut hash,
        );
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        format!("{name}:pbkdf2-sha256:4096:{}:{}", hex(salt), hex(&hash))
    }

    #[tokio::test]
    async fn passwords_check_against_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users");
        std::fs::write(
            &f,
            format!(
                "# users\n{}\n\n{}\n",
                line("alice", "s3cret"),
                line("bob", "x")
            ),
        )
        .unwrap();
        let users = Arc::new(PlainUsers::load(&f).unwrap());
        assert!(users.check("alice", b"s3cret").await);
        assert!(!users.check("alice", b"s3cret ").await);
        assert!(!users.check("alice", b"x").await);
        assert!(users.check("bob", b"x").await);
        assert!(!users.check("carol", b"x").await);
    }

    #[test]
    fn bad_user_files_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users");
        let good = line("alice", "pw");
        for (text, needle) in [
            ("alice:plain:pw".to_string(), "line 1"),
            (
                "alice:md5:4096:00112233445566:00".to_string(),
                "unknown hash scheme",
            ),
            (good.replace(":4096:", ":10:"), "iterations"),
            (good.replace(":4096:", ":4096:zz"), "hex"),
            (format!("{good}\n{good}"), "twice"),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = PlainUsers::load(&f).err().expect("refused");
            assert!(format!("{e:#}").contains(needle), "{e:#}");
        }
    }
}
