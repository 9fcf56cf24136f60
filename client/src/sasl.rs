//! SASL logins: PLAIN, and the client side of SCRAM-SHA-256/512 (RFC 5802, RFC 7677).

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore as _;

/// A SASL mechanism the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        [
            Mechanism::Plain,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Kafka's code for a SCRAM mechanism (AlterUserScramCredentials); `None` for PLAIN.
    pub fn scram_code(self) -> Option<i8> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha256 => Some(1),
            Mechanism::ScramSha512 => Some(2),
        }
    }

    pub fn from_scram_code(code: i8) -> Option<Mechanism> {
        match code {
            1 => Some(Mechanism::ScramSha256),
            2 => Some(Mechanism::ScramSha512),
            _ => None,
        }
    }
}

/// A user and password to log in with.
#[derive(Clone)]
pub struct Credentials {
    pub mechanism: Mechanism,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Iteration counts a client accepts from a server (Kafka's floor; a ceiling so a hostile
/// server cannot make the client hash for minutes).
const MIN_ITERATIONS: u32 = 4096;
const MAX_ITERATIONS: u32 = 1_000_000;

struct Hashes {
    hmac: hmac::Algorithm,
    digest: &'static digest::Algorithm,
    pbkdf2: pbkdf2::Algorithm,
}

fn hashes(m: Mechanism) -> Option<Hashes> {
    match m {
        Mechanism::Plain => None,
        Mechanism::ScramSha256 => Some(Hashes {
            hmac: hmac::HMAC_SHA256,
            digest: &digest::SHA256,
            pbkdf2: pbkdf2::PBKDF2_HMAC_SHA256,
        }),
        Mechanism::ScramSha512 => Some(Hashes {
            hmac: hmac::HMAC_SHA512,
            digest: &digest::SHA512,
            pbkdf2: pbkdf2::PBKDF2_HMAC_SHA512,
        }),
    }
}

/// `Hi(password, salt, iterations)`: what AlterUserScramCredentials carries (the broker
/// keeps only keys derived from it). `None` for PLAIN or zero iterations.
pub fn salted_password(
    m: Mechanism,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Option<Vec<u8>> {
    let h = hashes(m)?;
    let mut out = vec![0u8; h.digest.output_len()];
    pbkdf2::derive(
        h.pbkdf2,
        std::num::NonZeroU32::new(iterations)?,
        salt,
        password.as_bytes(),
        &mut out,
    );
    Some(out)
}

/// RFC 5802 `saslname`: ',' and '=' escaped.
fn saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// The client side of one SCRAM exchange: [`ScramClient::first`], then
/// [`ScramClient::last`] with the server's first message, then [`ScramClient::verify`] with
/// its final one.
pub struct ScramClient {
    hashes: Hashes,
    password: String,
    bare: String,
    nonce: String,
    /// The server's signature expected in its final message.
    expected: Option<Vec<u8>>,
}

impl ScramClient {
    /// `None` for PLAIN.
    pub fn new(m: Mechanism, user: &str, password: &str) -> Option<ScramClient> {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let nonce = B64.encode(raw);
        Some(ScramClient {
            hashes: hashes(m)?,
            password: password.to_string(),
            bare: format!("n={},r={nonce}", saslname(user)),
            nonce,
            expected: None,
        })
    }

    /// client-first-message.
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.bare).into_bytes()
    }

    fn mac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hashes.hmac, key), data)
            .as_ref()
            .to_vec()
    }

    /// client-final-message, from the server-first-message.
    pub fn last(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "the server's SCRAM message is not UTF-8".to_string())?;
        if let Some(e) = server_first.strip_prefix("e=") {
            return Err(format!("the server refused the login: {e}"));
        }
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = B64.decode(v).ok(),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!(
                "malformed SCRAM server-first message {server_first:?}"
            ));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server's SCRAM nonce does not extend ours".into());
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "the server asks for {iterations} SCRAM iterations ({MIN_ITERATIONS} to {MAX_ITERATIONS} accepted)"
            ));
        }
        let mut salted = vec![0u8; self.hashes.digest.output_len()];
        pbkdf2::derive(
            self.hashes.pbkdf2,
            std::num::NonZeroU32::new(iterations).expect("checked above"),
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let client_key = self.mac(&salted, b"Client Key");
        let stored_key = digest::digest(self.hashes.digest, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.bare);
        let signature = self.mac(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = self.mac(&salted, b"Server Key");
        self.expected = Some(self.mac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final-message: the server knew the credential too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(server_final);
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("the server refused the login: {e}"));
        }
        let got = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or_else(|| format!("malformed SCRAM server-final message {text:?}"))?;
        match &self.expected {
            Some(want) if constant_time::verify_slices_are_equal(want, &got).is_ok() => Ok(()),
            _ => Err("the server's SCRAM signature is wrong: it does not know the password".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example, with its client nonce.
    #[test]
    fn rfc7677_example() {
        let mut c = ScramClient::new(Mechanism::ScramSha256, "user", "pencil").unwrap();
        c.nonce = "rOprNGfwEbeRWgbNEkqO".into();
        c.bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        assert_eq!(c.first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let last = c
            .last(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(c.verify(b"v=AAAA").is_err());
        assert!(c.verify(b"e=invalid-proof").is_err());
    }

    #[test]
    fn hostile_server_messages_are_refused() {
        for first in [
            &b""[..],
            b"r=abc,s=AAAA,i=4096",
            b"e=other-error",
            b"s=AAAA,i=4096",
            b"r=NONCEx,s=!!,i=4096",
            b"r=NONCEx,s=AAAA,i=1",
            b"r=NONCEx,s=AAAA,i=4000000000",
            b"r=NONCEx,s=AAAA,i=-1",
            b"r=NONCE,s=AAAA,i=4096",
            b"\xff",
        ] {
            let mut c = ScramClient::new(Mechanism::ScramSha512, "u,=", "p").unwrap();
            c.nonce = "NONCE".into();
            assert!(
                c.last(first).is_err(),
                "{:?}",
                String::from_utf8_lossy(first)
            );
            // No signature is expected before the exchange has one.
            assert!(c.verify(b"v=AAAA").is_err());
        }
        assert!(ScramClient::new(Mechanism::Plain, "u", "p").is_none());
        assert_eq!(saslname("a,b=c"), "a=2Cb=3Dc");
    }
}
