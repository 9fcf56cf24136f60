//! SASL on SASL_PLAINTEXT and SASL_SSL listeners: SaslHandshake (v1) names the mechanism,
//! SaslAuthenticate carries its tokens. Until a connection has authenticated it may send only
//! ApiVersions, SaslHandshake and SaslAuthenticate; anything else closes it.
//!
//! Mechanisms: PLAIN (below) and SCRAM-SHA-256/512 ([`crate::scram`]). With
//! `connections_max_reauth_ms` a login lasts that long (KIP-368): SaslAuthenticate v1+ tells
//! the client, which logs in again on the same connection (same mechanism, same principal)
//! before then; a connection whose login has lapsed is closed at its next request.
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
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::error::code::{
    ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM,
};
use crate::handler::Ctx;
use crate::scram::{Mechanism, ScramServer, Step};

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

/// A `sasl_plain_users_file` line for `name` with `password`: PBKDF2-HMAC-SHA256 of it
/// with `salt` and `iterations` (which `load` wants at least 1000 and 8 bytes of salt).
pub fn users_file_line(name: &str, password: &str, salt: &[u8], iterations: u32) -> String {
    let mut hash = [0u8; 32];
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations.max(1)).expect("at least 1"),
        salt,
        password.as_bytes(),
        &mut hash,
    );
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{name}:pbkdf2-sha256:{iterations}:{}:{}",
        hex(salt),
        hex(&hash)
    )
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

/// The exchange a handshake chose.
enum Exchange {
    Plain,
    Scram(ScramServer),
}

/// A completed login: a re-authentication must keep its mechanism and principal.
#[derive(Debug)]
struct Login {
    mechanism: String,
    principal: String,
    /// The client logged in with SaslAuthenticate v1+, so it may log in again (KIP-368).
    can_reauthenticate: bool,
}

/// A SASL connection's progress.
#[derive(Default)]
pub struct SaslState {
    /// Between a handshake and the end of its exchange.
    exchange: Option<Exchange>,
    /// The connection has logged in (and may be logging in again).
    pub authenticated: bool,
    /// Authentication failed: the connection closes after its answer.
    pub failed: bool,
    login: Option<Login>,
    /// When the login lapses (`connections_max_reauth_ms`).
    expires: Option<std::time::Instant>,
}

impl std::fmt::Debug for SaslState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslState")
            .field("exchanging", &self.exchange.is_some())
            .field("authenticated", &self.authenticated)
            .field("failed", &self.failed)
            .field("login", &self.login)
            .field("expires", &self.expires)
            .finish()
    }
}

fn failure(code: i16, message: &str) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(code)
        .with_error_message(Some(StrBytes::from_string(message.to_string())))
}

impl SaslState {
    /// The mechanisms offered, in `ctx.config` order.
    fn mechanisms(ctx: &Ctx) -> Vec<StrBytes> {
        ctx.config
            .sasl_mechanisms()
            .into_iter()
            .map(StrBytes::from_string)
            .collect()
    }

    /// The principal of the last completed login.
    pub fn principal(&self) -> Option<&str> {
        self.login.as_ref().map(|l| l.principal.as_str())
    }

    /// Whether the login has lapsed (KIP-368) and no re-authentication is under way: the
    /// connection must close rather than serve `api_key`.
    pub fn lapsed(&self, api_key: ApiKey, now: std::time::Instant) -> bool {
        let continuing = self.exchange.is_some() && api_key == ApiKey::SaslAuthenticate;
        self.expires.is_some_and(|at| now >= at) && !continuing
    }

    pub fn handshake(&mut self, ctx: &Ctx, req: SaslHandshakeRequest) -> SaslHandshakeResponse {
        let offered = Self::mechanisms(ctx);
        let response = SaslHandshakeResponse::default().with_mechanisms(offered.clone());
        if self.exchange.is_some() {
            self.failed = true;
            return response.with_error_code(ILLEGAL_SASL_STATE);
        }
        if let Some(login) = &self.login {
            // Re-authentication (KIP-368): only for clients that announced it, with the
            // mechanism they logged in with.
            if !login.can_reauthenticate || *login.mechanism != *req.mechanism {
                self.failed = true;
                return response.with_error_code(ILLEGAL_SASL_STATE);
            }
        }
        if !offered.iter().any(|m| **m == *req.mechanism) {
            return response.with_error_code(UNSUPPORTED_SASL_MECHANISM);
        }
        self.exchange = Some(match Mechanism::from_name(&req.mechanism) {
            Some(m) => Exchange::Scram(ScramServer::new(m)),
            None => Exchange::Plain,
        });
        response
    }

    /// Takes the client's next token. Sets `failed` when the login failed (the caller
    /// answers after the delay and closes the connection), `authenticated` and the
    /// principal when it succeeded.
    pub async fn authenticate(
        &mut self,
        ctx: &Ctx,
        version: i16,
        req: SaslAuthenticateRequest,
    ) -> SaslAuthenticateResponse {
        let outcome = match self.exchange.as_mut() {
            None => {
                self.failed = true;
                return failure(
                    ILLEGAL_SASL_STATE,
                    "SaslAuthenticate before a SaslHandshake",
                );
            }
            Some(Exchange::Plain) => Self::plain(ctx, &req.auth_bytes)
                .await
                .map(|user| (user, Vec::new())),
            Some(Exchange::Scram(server)) => match server.step(&ctx.scram, &req.auth_bytes) {
                Ok(Step::Continue(reply)) => {
                    return SaslAuthenticateResponse::default().with_auth_bytes(reply.into())
                }
                Ok(Step::Done { user, reply }) => Ok((user, reply)),
                Err(message) => Err(message),
            },
        };
        let mechanism = match self.exchange.take() {
            Some(Exchange::Scram(s)) => s.mechanism().name().to_string(),
            _ => "PLAIN".to_string(),
        };
        let (user, reply) = match outcome {
            Ok(done) => done,
            Err(message) => return self.fail(&message),
        };
        let principal = format!("User:{user}");
        let reauthentication = self.login.is_some();
        if self.principal().is_some_and(|p| p != principal) {
            return self.fail("Cannot change principals during re-authentication");
        }
        ::metrics::counter!("strata_sasl_authentications_total", "result" => "ok").increment(1);
        if reauthentication {
            ::metrics::counter!("strata_sasl_reauthentications_total").increment(1);
        }
        self.authenticated = true;
        self.login = Some(Login {
            mechanism,
            principal,
            can_reauthenticate: self
                .login
                .as_ref()
                .map_or(version >= 1, |l| l.can_reauthenticate),
        });
        let mut response = SaslAuthenticateResponse::default().with_auth_bytes(reply.into());
        let lifetime = ctx.config.connections_max_reauth_ms.min(i64::MAX as u64);
        if lifetime > 0 {
            // A lifetime past what the clock can count never lapses.
            self.expires =
                std::time::Instant::now().checked_add(std::time::Duration::from_millis(lifetime));
            if version >= 1 {
                response.session_lifetime_ms = lifetime as i64;
            }
        }
        response
    }

    fn fail(&mut self, message: &str) -> SaslAuthenticateResponse {
        ::metrics::counter!("strata_sasl_authentications_total", "result" => "failed").increment(1);
        self.failed = true;
        failure(SASL_AUTHENTICATION_FAILED, message)
    }

    /// Checks a PLAIN token (`authzid NUL authcid NUL password`); the user on success.
    async fn plain(ctx: &Ctx, token: &[u8]) -> Result<String, String> {
        let Some(users) = ctx.plain_users.as_ref() else {
            return Err("no PLAIN users are configured".into());
        };
        let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
        let [authzid, authcid, password] = parts[..] else {
            return Err("malformed PLAIN token".into());
        };
        let Ok(name) = std::str::from_utf8(authcid) else {
            return Err("malformed PLAIN token".into());
        };
        if !authzid.is_empty() && authzid != authcid {
            return Err("authorization id must be empty or the user's own".into());
        }
        if name.is_empty() || !users.check(name, password).await {
            return Err("Authentication failed: Invalid username or password".into());
        }
        Ok(name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, password: &str) -> String {
        users_file_line(name, password, b"0123456789abcdef", 4096)
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
