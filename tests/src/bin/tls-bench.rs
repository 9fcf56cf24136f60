//! TLS against plaintext in one run: a broker process with a PLAINTEXT and an SSL listener
//! (certificates made here), `strata perf produce` (acks=all) and `strata perf consume`
//! through each, alternating which goes first; the broker's CPU per GB for each. Then the
//! login rate: `strata perf connect` opening and closing connections with no login, SASL/PLAIN,
//! SCRAM-SHA-256 and SCRAM-SHA-512 (4096 iterations, users made with `strata user`), over
//! SASL_PLAINTEXT and SASL_SSL, and the broker's CPU per login.
//!
//! ```text
//! cargo build -p strata-client && cargo run -p strata-tests --bin tls-bench -- --messages 1000000
//! ```
//!
//! Options: `--messages N` `--size BYTES` `--rounds R` `--logins N` `--strata PATH` (default:
//! the `strata` binary beside this one).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use strata_tests::broker::{free_port, BrokerProcess};
use strata_tests::create_topic;
use strata_tests::procstat::cpu_seconds;

fn certificates(dir: &Path) -> Result<()> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "tls-bench CA");
    let ca_key = KeyPair::generate()?;
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key)?.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    server.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let key = KeyPair::generate()?;
    std::fs::write(
        dir.join("server.pem"),
        server.signed_by(&key, &issuer)?.pem(),
    )?;
    std::fs::write(dir.join("server.key"), key.serialize_pem())?;
    Ok(())
}

fn strata(cli: &Path, args: &[String]) -> Result<serde_json::Value> {
    let out = std::process::Command::new(cli)
        .args(args)
        .output()
        .with_context(|| format!("run {} (cargo build -p strata-client)", cli.display()))?;
    if !out.status.success() {
        bail!("strata {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn main() -> Result<()> {
    let (mut messages, mut size, mut rounds, mut logins) = (500_000u64, 1024usize, 2u32, 2000u64);
    let mut cli: PathBuf = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .join("strata");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--messages" => messages = value()?.parse()?,
            "--size" => size = value()?.parse()?,
            "--rounds" => rounds = value()?.parse()?,
            "--logins" => logins = value()?.parse()?,
            "--strata" => cli = value()?.into(),
            other => {
                bail!("unknown option {other} (--messages N --size B --rounds R --logins N --strata PATH)")
            }
        }
    }
    let dir = tempfile::tempdir()?;
    certificates(dir.path())?;
    let (plain, ssl, sasl, sasl_ssl) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let listeners = format!(
        "PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl},SASL_PLAINTEXT://127.0.0.1:{sasl},SASL_SSL://127.0.0.1:{sasl_ssl}"
    );
    let d = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(
        dir.path().join("users"),
        plain_user("bench", "bench-secret"),
    )?;
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        plain,
        &[
            ("STRATA_LISTENERS", listeners.as_str()),
            ("STRATA_SSL_CERTIFICATE_LOCATION", &d("server.pem")),
            ("STRATA_SSL_KEY_LOCATION", &d("server.key")),
            (
                "STRATA_SASL_ENABLED_MECHANISMS",
                "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            ),
            ("STRATA_SASL_PLAIN_USERS_FILE", &d("users")),
        ],
    )?;
    let pid = broker.pid().to_string();
    let cpu = || cpu_seconds(&pid).map_or(f64::NAN, |(u, s)| u + s);
    println!("tls-bench: {messages} records x {size} bytes, acks=all, {rounds} rounds");
    let gb = messages as f64 * size as f64 / 1e9;
    let mut totals = [[0.0f64; 2]; 2]; // [plaintext, tls][produce, consume] MB/s
    for round in 0..rounds {
        let order: [bool; 2] = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for tls in order {
            let name = if tls { "TLS" } else { "plaintext" };
            let topic = format!("bench-{round}-{}", if tls { "tls" } else { "plain" });
            create_topic(&broker.bootstrap(), &topic, 1)?;
            let mut base: Vec<String> = vec![
                "-b".into(),
                format!("127.0.0.1:{}", if tls { ssl } else { plain }),
            ];
            if tls {
                base.extend(["--tls-ca".into(), d("ca.pem")]);
            }
            let run = |sub: &[&str]| {
                let mut a = base.clone();
                a.extend(sub.iter().map(|s| s.to_string()));
                strata(&cli, &a)
            };
            let c0 = cpu();
            let p = run(&[
                "perf",
                "produce",
                &topic,
                "-n",
                &messages.to_string(),
                "-s",
                &size.to_string(),
                "--json",
                "-q",
            ])?;
            let c1 = cpu();
            let c = run(&[
                "perf",
                "consume",
                &topic,
                "-n",
                &messages.to_string(),
                "--json",
                "-q",
                "--partition-max-bytes",
                "10485760",
            ])?;
            let c2 = cpu();
            let (pm, cm) = (
                p["mb_per_sec"].as_f64().unwrap_or(0.0),
                c["mb_per_sec"].as_f64().unwrap_or(0.0),
            );
            totals[tls as usize][0] += pm;
            totals[tls as usize][1] += cm;
            println!(
                "  round {round} {name:>9}: produce {pm:7.1} MB/s (p99 {} ms), broker {:.2} CPU-s/GB; consume {cm:7.1} MB/s, broker {:.2} CPU-s/GB",
                p["latency_ms"]["p99"],
                (c1 - c0) / gb,
                (c2 - c1) / gb
            );
        }
    }
    let r = rounds as f64;
    println!(
        "mean: produce plaintext {:.1} MB/s, TLS {:.1} MB/s ({:.2}x); consume plaintext {:.1} MB/s, TLS {:.1} MB/s ({:.2}x)",
        totals[0][0] / r,
        totals[1][0] / r,
        totals[1][0] / totals[0][0],
        totals[0][1] / r,
        totals[1][1] / r,
        totals[1][1] / totals[0][1]
    );
    // Login rate.
    let bootstrap = format!("127.0.0.1:{plain}");
    for m in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let out = std::process::Command::new(&cli)
            .args([
                "-b",
                &bootstrap,
                "user",
                "scram-set",
                "bench",
                "-m",
                m,
                "-i",
                "4096",
            ])
            .env("STRATA_NEW_PASSWORD", "bench-secret")
            .output()?;
        if !out.status.success() {
            bail!(
                "strata user scram-set: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    println!("login rate: {logins} connections each, 8 at a time, 4096 PBKDF2 iterations");
    for (port, tls, mechanism) in [
        (plain, false, None),
        (sasl, false, Some("PLAIN")),
        (sasl, false, Some("SCRAM-SHA-256")),
        (sasl, false, Some("SCRAM-SHA-512")),
        (ssl, true, None),
        (sasl_ssl, true, Some("SCRAM-SHA-256")),
    ] {
        let mut a: Vec<String> = vec!["-b".into(), format!("127.0.0.1:{port}")];
        if tls {
            a.extend(["--tls-ca".into(), d("ca.pem")]);
        }
        if let Some(m) = mechanism {
            a.extend(
                [
                    "--sasl-user",
                    "bench",
                    "--sasl-password",
                    "bench-secret",
                    "--sasl-mechanism",
                    m,
                ]
                .map(String::from),
            );
        }
        a.extend(
            [
                "perf",
                "connect",
                "-n",
                &logins.to_string(),
                "-c",
                "8",
                "--json",
            ]
            .map(String::from),
        );
        let c0 = cpu();
        let r = strata(&cli, &a)?;
        let c1 = cpu();
        println!(
            "  {:>4} {:>13}: {:>6} logins/s, p50 {} ms, p99 {} ms; broker {:.0} CPU-us per login",
            if tls { "TLS" } else { "" },
            mechanism.unwrap_or("no login"),
            r["connections_per_sec"],
            r["connect_latency_ms"]["p50"],
            r["connect_latency_ms"]["p99"],
            (c1 - c0) / logins as f64 * 1e6
        );
    }
    let mut broker = broker;
    broker.terminate()?;
    Ok(())
}

/// A `sasl_plain_users_file` line (4096 rounds).
fn plain_user(name: &str, password: &str) -> String {
    strata_broker::sasl::users_file_line(name, password, b"tls-bench-salt16", 4096) + "\n"
}
