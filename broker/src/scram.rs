//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677): the credentials the broker keeps
//! and the server side of the exchange.
//!
//! A credential is what RFC 5802 lets a server keep: the salt, the iteration count,
//! StoredKey = H(HMAC(SaltedPassword, "Client Key")) and ServerKey =
//! HMAC(SaltedPassword, "Server Key"). Neither the password nor the salted password is
//! stored. AlterUserScramCredentials hands the broker a salted password (Kafka's admin
//! clients salt on their side); the keys are derived from it and it is dropped.
//!
//! An unknown user gets a server-first message like a known one (a salt derived from the
//! name with a per-process secret, so asking twice gives the same answer) and fails at the
//! proof, as a wrong password does: the exchange does not tell who exists.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};

use aws_lc_rs::{constant_time, digest, hmac, rand::SecureRandom as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use strata_storage::{ScramCredential, StorageError, Store};

/// The two SCRAM mechanisms, with Kafka's codes (`ScramMechanism`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

/// Kafka's bounds on a credential's iteration count.
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    pub fn code(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    /// Bytes of a key, a proof and a salted password.
    pub fn key_len(self) -> usize {
        self.digest().output_len()
    }

    fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    /// StoredKey and ServerKey from a salted password.
    pub fn keys(self, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let client_key = self.mac(salted_password, b"Client Key");
        (
            self.hash(&client_key),
            self.mac(salted_password, b"Server Key"),
        )
    }
}

/// A user's credential for one mechanism, as the exchange needs it.
#[derive(Clone, Debug)]
struct Credential {
    iterations: i32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

/// A credential to store: what AlterUserScramCredentials carries.
#[derive(Clone, Debug)]
pub struct Upsert {
    pub user: String,
    pub mechanism: Mechanism,
    pub iterations: i32,
    pub salt: Vec<u8>,
    /// `Hi(password, salt, iterations)`; only the keys derived from it are kept.
    pub salted_password: Vec<u8>,
}

/// The SCRAM credentials, loaded from the store at start-up and changed through
/// [`ScramUsers::alter`] (AlterUserScramCredentials).
pub struct ScramUsers {
    creds: RwLock<HashMap<(String, Mechanism), Credential>>,
    /// Serializes changes: store write, then the map, one change at a time.
    changes: Mutex<()>,
    /// Keys the fake salts of unknown users.
    secret: [u8; 32],
}

impl ScramUsers {
    /// Loads the stored credentials. Blocks: scans them (start-up only).
    pub fn load(store: &Store) -> Result<ScramUsers, StorageError> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| StorageError::Io("no system randomness".into()))?;
        let mut creds = HashMap::new();
        for c in store.scram_credentials()? {
            if let Some(m) = Mechanism::from_code(c.mechanism) {
                creds.insert((c.user.clone(), m), Credential::from_stored(c));
            }
        }
        Ok(ScramUsers {
            creds: RwLock::new(creds),
            changes: Mutex::new(()),
            secret,
        })
    }

    fn get(&self, user: &str, m: Mechanism) -> Option<Credential> {
        self.creds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(user.to_string(), m))
            .cloned()
    }

    /// Per user, the mechanisms they have a credential for and its iteration count.
    pub fn describe(&self) -> BTreeMap<String, Vec<(Mechanism, i32)>> {
        let mut out: BTreeMap<String, Vec<(Mechanism, i32)>> = BTreeMap::new();
        for ((user, m), c) in self.creds.read().unwrap_or_else(|e| e.into_inner()).iter() {
            out.entry(user.clone())
                .or_default()
                .push((*m, c.iterations));
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }

    pub fn len(&self) -> usize {
        self.creds.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `user` has a credential for `m`.
    pub fn contains(&self, user: &str, m: Mechanism) -> bool {
        self.get(user, m).is_some()
    }

    /// Stores `upsert` and removes `remove`, durably and all at once, then serves the
    /// result. `limit` caps the number of credentials held afterwards: a change that would
    /// go over it (and grow) changes nothing and returns `Ok(false)`. Blocks: a synced write.
    pub fn alter(
        &self,
        store: &Store,
        upsert: &[Upsert],
        remove: &[(String, Mechanism)],
        limit: usize,
    ) -> Result<bool, StorageError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.creds.read().unwrap_or_else(|e| e.into_inner()).clone();
        for (user, m) in remove {
            next.remove(&(user.clone(), *m));
        }
        let stored: Vec<ScramCredential> = upsert
            .iter()
            .map(|u| {
                let (stored_key, server_key) = u.mechanism.keys(&u.salted_password);
                ScramCredential {
                    user: u.user.clone(),
                    mechanism: u.mechanism.code(),
                    iterations: u.iterations,
                    salt: u.salt.clone(),
                    stored_key,
                    server_key,
                }
            })
            .collect();
        for c in &stored {
            let m = Mechanism::from_code(c.mechanism).expect("made from a Mechanism");
            next.insert((c.user.clone(), m), Credential::from_stored(c.clone()));
        }
        if next.len() > limit && next.len() > self.len() {
            return Ok(false);
        }
        let removed: Vec<(String, i8)> =
            remove.iter().map(|(u, m)| (u.clone(), m.code())).collect();
        store.update_scram_credentials(&stored, &removed)?;
        *self.creds.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(true)
    }

    /// What an unknown user is told: stable per name, unlinkable to real users.
    fn fake(&self, user: &str, m: Mechanism) -> Credential {
        let mut seed = user.as_bytes().to_vec();
        seed.push(m.code() as u8);
        let salt = Mechanism::Sha256.mac(&self.secret, &seed)[..16].to_vec();
        Credential {
            iterations: MIN_ITERATIONS,
            salt,
            // No client key hashes to this (the exchange also checks `known`).
            stored_key: vec![0; m.key_len()],
            server_key: vec![0; m.key_len()],
        }
    }
}

impl Credential {
    fn from_stored(c: ScramCredential) -> Credential {
        Credential {
            iterations: c.iterations,
            salt: c.salt,
            stored_key: c.stored_key,
            server_key: c.server_key,
        }
    }
}

/// One step's result.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes and wait for the client's next message.
    Continue(Vec<u8>),
    /// The client proved its password: send these bytes (the server's signature); `user`
    /// is who it is.
    Done { user: String, reply: Vec<u8> },
}

enum State {
    Initial,
    /// Server-first sent; waiting for client-final.
    SentFirst {
        user: String,
        cred: Credential,
        known: bool,
        gs2_header: String,
        /// client-first-message-bare "," server-first-message
        transcript: String,
        nonce: String,
    },
    Finished,
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: Mechanism,
    state: State,
}

/// A failed exchange: the message is for the log and the client.
pub type Failure = String;

/// RFC 5802 `saslname`: "=2C" stands for ',' and "=3D" for '='; any other '=' is invalid.
fn decode_saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Splits `s` into its `k=value` attributes, in order.
fn attributes(s: &str) -> Option<Vec<(char, &str)>> {
    s.split(',')
        .map(|a| {
            let mut c = a.chars();
            let k = c.next()?;
            let v = c.as_str().strip_prefix('=')?;
            k.is_ascii_alphabetic().then_some((k, v))
        })
        .collect()
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> ScramServer {
        ScramServer {
            mechanism,
            state: State::Initial,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Takes the client's next message.
    pub fn step(&mut self, users: &ScramUsers, message: &[u8]) -> Result<Step, Failure> {
        let message =
            std::str::from_utf8(message).map_err(|_| "SCRAM message is not UTF-8".to_string())?;
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Initial => self.client_first(users, message),
            State::SentFirst {
                user,
                cred,
                known,
                gs2_header,
                transcript,
                nonce,
            } => {
                let (without_proof, proof) = Self::client_final(message, &gs2_header, &nonce)?;
                if proof.len() != self.mechanism.key_len() {
                    return Err("malformed SCRAM client-final message".into());
                }
                let auth_message = format!("{transcript},{without_proof}");
                let m = self.mechanism;
                let signature = m.mac(&cred.stored_key, auth_message.as_bytes());
                let client_key: Vec<u8> =
                    proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
                let matches =
                    constant_time::verify_slices_are_equal(&m.hash(&client_key), &cred.stored_key)
                        .is_ok();
                if !(matches && known) {
                    return Err(format!(
                        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                        m.name()
                    ));
                }
                let server_signature = m.mac(&cred.server_key, auth_message.as_bytes());
                Ok(Step::Done {
                    user,
                    reply: format!("v={}", B64.encode(server_signature)).into_bytes(),
                })
            }
            State::Finished => Err("SCRAM exchange already finished".into()),
        }
    }

    fn client_first(&mut self, users: &ScramUsers, message: &str) -> Result<Step, Failure> {
        let malformed = || "malformed SCRAM client-first message".to_string();
        // gs2-header: a channel-binding flag, an optional authzid, then the bare message.
        let (flag, rest) = message.split_once(',').ok_or_else(malformed)?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err("SCRAM channel binding is not supported".into()),
            _ => return Err(malformed()),
        }
        let (authzid, bare) = rest.split_once(',').ok_or_else(malformed)?;
        let gs2_header = format!("{flag},{authzid},");
        // n=USER,r=NONCE, then extensions (Kafka's clients send `tokenauth=true` for
        // delegation tokens, which this broker does not issue; others are ignored).
        let mut fields = bare.split(',');
        let (user, client_nonce) = match (fields.next(), fields.next()) {
            (Some(m), _) if m.starts_with("m=") => {
                return Err("SCRAM mandatory extensions are not supported".into())
            }
            (Some(u), Some(r)) => (
                u.strip_prefix("n=").ok_or_else(malformed)?,
                r.strip_prefix("r=").ok_or_else(malformed)?,
            ),
            _ => return Err(malformed()),
        };
        for extension in fields {
            let (key, value) = extension.split_once('=').ok_or_else(malformed)?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(malformed());
            }
            if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
                return Err("delegation tokens are not supported".into());
            }
        }
        let user = decode_saslname(user).ok_or_else(malformed)?;
        if user.is_empty()
            || client_nonce.is_empty()
            || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b))
        {
            return Err(malformed());
        }
        if !authzid.is_empty() {
            let id = authzid
                .strip_prefix("a=")
                .and_then(decode_saslname)
                .ok_or_else(malformed)?;
            if id != user {
                return Err("authorization id must be empty or the user's own".to_string());
            }
        }
        let mut server_nonce = [0u8; 18];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut server_nonce)
            .map_err(|_| "no system randomness".to_string())?;
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let (cred, known) = match users.get(&user, self.mechanism) {
            Some(c) => (c, true),
            None => (users.fake(&user, self.mechanism), false),
        };
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&cred.salt),
            cred.iterations
        );
        self.state = State::SentFirst {
            user,
            cred,
            known,
            gs2_header,
            transcript: format!("{bare},{server_first}"),
            nonce,
        };
        Ok(Step::Continue(server_first.into_bytes()))
    }

    /// Checks client-final's channel binding and nonce; returns the message without its
    /// proof, and the proof.
    fn client_final<'a>(
        message: &'a str,
        gs2_header: &str,
        nonce: &str,
    ) -> Result<(&'a str, Vec<u8>), Failure> {
        let malformed = || "malformed SCRAM client-final message".to_string();
        let (without_proof, proof) = message.rsplit_once(",p=").ok_or_else(malformed)?;
        let attrs = attributes(without_proof).ok_or_else(malformed)?;
        let [('c', binding), ('r', got_nonce), ..] = attrs[..] else {
            return Err(malformed());
        };
        if B64.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
            return Err("SCRAM channel binding does not match the client-first message".into());
        }
        if got_nonce != nonce {
            return Err("SCRAM nonce does not match".into());
        }
        let proof = B64.decode(proof).map_err(|_| malformed())?;
        Ok((without_proof, proof))
    }
}

/// The client's salted password, `Hi(password, salt, iterations)` (PBKDF2 with the
/// mechanism's HMAC). Used by tests and the benchmark to make credentials.
pub fn salt_password(m: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let alg = match m {
        Mechanism::Sha256 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        Mechanism::Sha512 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA512,
    };
    let mut out = vec![0u8; m.key_len()];
    aws_lc_rs::pbkdf2::derive(
        alg,
        std::num::NonZeroU32::new(iterations.max(1)).expect("at least 1"),
        salt,
        password,
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users_with(
        user: &str,
        m: Mechanism,
        password: &str,
        salt: &[u8],
        iterations: i32,
    ) -> ScramUsers {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(strata_storage::StoreConfig::new(dir.path())).unwrap();
        let users = ScramUsers::load(&store).unwrap();
        let salted = salt_password(m, password.as_bytes(), salt, iterations as u32);
        let up = Upsert {
            user: user.into(),
            mechanism: m,
            iterations,
            salt: salt.to_vec(),
            salted_password: salted,
        };
        assert!(users.alter(&store, &[up], &[], 10).unwrap());
        users
    }

    /// RFC 7677's SCRAM-SHA-256 example, with the server nonce it uses.
    #[test]
    fn rfc7677_example_verifies() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let users = users_with("user", Mechanism::Sha256, "pencil", &salt, 4096);
        let mut s = ScramServer::new(Mechanism::Sha256);
        let Step::Continue(first) = s.step(&users, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap()
        else {
            panic!("continues")
        };
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=rOprNGfwEbeRWgbNEkqO"));
        assert!(first.ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
        // Redo the exchange with RFC 7677's server nonce to check its proof and signature.
        let State::SentFirst { transcript, .. } = &mut s.state else {
            panic!()
        };
        let rfc_nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        *transcript = format!(
            "n=user,r=rOprNGfwEbeRWgbNEkqO,r={rfc_nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        if let State::SentFirst { nonce, .. } = &mut s.state {
            *nonce = rfc_nonce.into();
        }
        let fin = format!("c=biws,r={rfc_nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(
            s.step(&users, fin.as_bytes()).unwrap(),
            Step::Done {
                user: "user".into(),
                reply: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
            }
        );
    }

    /// A client's side of the exchange, for the tests below.
    fn client_final(m: Mechanism, password: &str, first_bare: &str, server_first: &str) -> String {
        let attrs = attributes(server_first).unwrap();
        let nonce = attrs[0].1;
        let salt = B64.decode(attrs[1].1).unwrap();
        let iterations: u32 = attrs[2].1.parse().unwrap();
        let salted = salt_password(m, password.as_bytes(), &salt, iterations);
        let client_key = m.mac(&salted, b"Client Key");
        let stored = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let sig = m.mac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn exchange(
        users: &ScramUsers,
        m: Mechanism,
        user: &str,
        password: &str,
    ) -> Result<Step, Failure> {
        let mut s = ScramServer::new(m);
        let bare = format!("n={user},r=abcdefgh");
        let Step::Continue(first) = s.step(users, format!("n,,{bare}").as_bytes())? else {
            panic!("continues")
        };
        let first = String::from_utf8(first).unwrap();
        s.step(users, client_final(m, password, &bare, &first).as_bytes())
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_only_it() {
        for m in Mechanism::ALL {
            let users = users_with("al=ice", m, "pw", b"salty", 4096);
            let ok = exchange(&users, m, "al=3Dice", "pw").unwrap();
            assert!(
                matches!(ok, Step::Done { ref user, .. } if user == "al=ice"),
                "{ok:?}"
            );
            assert!(exchange(&users, m, "al=3Dice", "pw2").is_err());
            // Unknown users fail at the proof, with the same message.
            let other = exchange(&users, m, "bob", "pw").unwrap_err();
            assert_eq!(other, exchange(&users, m, "al=3Dice", "x").unwrap_err());
            // The other mechanism has no credential for this user.
            let o = if m == Mechanism::Sha256 {
                Mechanism::Sha512
            } else {
                Mechanism::Sha256
            };
            assert!(exchange(&users, o, "al=3Dice", "pw").is_err());
        }
    }

    #[test]
    fn unknown_users_get_a_stable_salt() {
        let users = users_with("a", Mechanism::Sha256, "pw", b"s", 4096);
        let first = |u: &str| {
            let mut s = ScramServer::new(Mechanism::Sha256);
            let Step::Continue(f) = s.step(&users, format!("n,,n={u},r=x").as_bytes()).unwrap()
            else {
                panic!()
            };
            String::from_utf8(f)
                .unwrap()
                .split_once(",s=")
                .unwrap()
                .1
                .to_string()
        };
        assert_eq!(first("ghost"), first("ghost"));
        assert_ne!(first("ghost"), first("ghost2"));
    }

    #[test]
    fn hostile_messages_fail_cleanly() {
        let users = users_with("u", Mechanism::Sha256, "pw", b"s", 4096);
        for first in [
            &b""[..],
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=u,r=a",
            b"p=tls-unique,,n=u,r=a",
            b"n,,r=a,n=u",
            b"n,,n=u",
            b"n,,n=,r=a",
            b"n,,n=u,r=",
            b"n,,n=u=,r=a",
            b"n,,n=u=2,r=a",
            b"n,,m=ext,n=u,r=a",
            b"n,a=other,n=u,r=a",
            b"n,,n=u,r=a b",
            b"n,,n=u,r=a,tokenauth=true",
            b"\xff\xfe",
            b"n,,n=u,r=a,=,",
            b"n,,n=u,r=a,x",
            b"n,,n=u,r=a,bad key=1",
        ] {
            let mut s = ScramServer::new(Mechanism::Sha256);
            assert!(
                s.step(&users, first).is_err(),
                "{:?}",
                String::from_utf8_lossy(first)
            );
        }
        for fin in [
            "",
            "c=biws",
            "c=biws,r=WRONG,p=AAAA",
            "c=eSws,r={n},p=AAAA",
            "c=biws,r={n},p=!!!",
            "c=biws,r={n},p=",
            "c=biws,r={n},p=AAAA",
            "r={n},c=biws,p=AAAA",
        ] {
            let mut s = ScramServer::new(Mechanism::Sha256);
            let Step::Continue(f) = s.step(&users, b"n,,n=u,r=abc").unwrap() else {
                panic!()
            };
            let f = String::from_utf8(f).unwrap();
            let nonce = f.split(',').next().unwrap().strip_prefix("r=").unwrap();
            let fin = fin.replace("{n}", nonce);
            assert!(s.step(&users, fin.as_bytes()).is_err(), "{fin}");
            // Nothing after a finished exchange.
            assert!(s.step(&users, b"n,,n=u,r=abc").is_err());
        }
    }

    #[test]
    fn alter_replaces_removes_and_caps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(strata_storage::StoreConfig::new(dir.path())).unwrap();
        let users = ScramUsers::load(&store).unwrap();
        let up = |u: &str, m: Mechanism, i: i32| Upsert {
            user: u.into(),
            mechanism: m,
            iterations: i,
            salt: b"salt".to_vec(),
            salted_password: vec![1; m.key_len()],
        };
        assert!(users
            .alter(
                &store,
                &[
                    up("a", Mechanism::Sha256, 4096),
                    up("a", Mechanism::Sha512, 8192)
                ],
                &[],
                2
            )
            .unwrap());
        assert!(
            !users
                .alter(&store, &[up("b", Mechanism::Sha256, 4096)], &[], 2)
                .unwrap(),
            "over the cap"
        );
        assert!(users
            .alter(
                &store,
                &[up("a", Mechanism::Sha256, 5000)],
                &[("a".into(), Mechanism::Sha512)],
                2
            )
            .unwrap());
        assert_eq!(
            users.describe().get("a"),
            Some(&vec![(Mechanism::Sha256, 5000)])
        );
        drop(users);
        let again = ScramUsers::load(&store).unwrap();
        assert_eq!(
            again.describe().get("a"),
            Some(&vec![(Mechanism::Sha256, 5000)])
        );
        assert!(!again.contains("b", Mechanism::Sha256));
    }
}
