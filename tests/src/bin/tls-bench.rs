//! TLS against plaintext in one run: a broker process with a PLAINTEXT and an SSL listener
//! (certificates made here), `strata perf produce` (acks=all) and `strata perf consume`
//! through each, alternating which goes first; the broker's CPU per GB for each.
//!
//! ```text
//! cargo build -p strata-client && cargo run -p strata-tests --bin tls-bench -- --messages 1000000
//! ```
//!
//! Options: `--messages N` `--size BYTES` `--rounds R` `--strata PATH` (default: the
//! `strata` binary beside this one).

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
    let (mut messages, mut size, mut rounds) = (500_000u64, 1024usize, 2u32);
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
            "--strata" => cli = value()?.into(),
            other => {
                bail!("unknown option {other} (--messages N --size B --rounds R --strata PATH)")
            }
        }
    }
    let dir = tempfile::tempdir()?;
    certificates(dir.path())?;
    let (plain, ssl) = (free_port()?, free_port()?);
    let listeners = format!("PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl}");
    let d = |n: &str| dir.path().join(n).display().to_string();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        plain,
        &[
            ("STRATA_LISTENERS", listeners.as_str()),
            ("STRATA_SSL_CERTIFICATE_LOCATION", &d("server.pem")),
            ("STRATA_SSL_KEY_LOCATION", &d("server.key")),
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
    let mut broker = broker;
    broker.terminate()?;
    Ok(())
}
