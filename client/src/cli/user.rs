//! `strata user list|scram-set|scram-delete`: SCRAM credentials (AlterUserScramCredentials,
//! DescribeUserScramCredentials).

use std::io::BufRead as _;

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use serde_json::json;
use strata_client::sasl::Mechanism;

use super::output::print_rows;
use super::{exit, Ctx};

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Users with SCRAM credentials: their mechanisms and iteration counts.
    List {
        /// Only these users (each must have a credential).
        users: Vec<String>,
    },
    /// Set a user's SCRAM password (creating the user). The password comes from
    /// STRATA_NEW_PASSWORD or, without it, the first line of stdin; it is salted here and
    /// never sent.
    ScramSet {
        user: String,
        #[arg(short, long, default_value = "SCRAM-SHA-256", value_parser = scram_mechanism)]
        mechanism: Mechanism,
        /// PBKDF2 rounds (4096 to 16384).
        #[arg(short, long, default_value_t = 8192)]
        iterations: u32,
    },
    /// Delete a user's SCRAM credential for one mechanism.
    ScramDelete {
        user: String,
        #[arg(short, long, default_value = "SCRAM-SHA-256", value_parser = scram_mechanism)]
        mechanism: Mechanism,
    },
}

fn scram_mechanism(s: &str) -> Result<Mechanism, String> {
    match Mechanism::from_name(s) {
        Some(m) if m.scram_code().is_some() => Ok(m),
        _ => Err(format!("{s:?} is not SCRAM-SHA-256 or SCRAM-SHA-512")),
    }
}

fn new_password() -> Result<String> {
    if let Ok(p) = std::env::var("STRATA_NEW_PASSWORD") {
        if !p.is_empty() {
            return Ok(p);
        }
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password: set STRATA_NEW_PASSWORD or give it on stdin");
    }
    Ok(password.to_string())
}

pub async fn run(ctx: &Ctx, cmd: UserCmd) -> Result<i32> {
    match cmd {
        UserCmd::List { users } => {
            let client = ctx.client().await?;
            let rows: Vec<_> = client
                .describe_scram_credentials(&users)
                .await?
                .into_iter()
                .map(|u| {
                    let creds: Vec<_> = u
                        .credentials
                        .iter()
                        .map(|(m, i)| format!("{m} ({i} iterations)"))
                        .collect();
                    json!({"user": u.user, "credentials": creds})
                })
                .collect();
            print_rows(ctx.format, &["user", "credentials"], &rows);
        }
        UserCmd::ScramSet {
            user,
            mechanism,
            iterations,
        } => {
            let password = new_password()?;
            let client = ctx.client().await?;
            client
                .set_scram_credential(&user, mechanism, &password, iterations)
                .await?;
            eprintln!("set {} credential of {user}", mechanism.name());
        }
        UserCmd::ScramDelete { user, mechanism } => {
            let client = ctx.client().await?;
            client.delete_scram_credential(&user, mechanism).await?;
            eprintln!("deleted {} credential of {user}", mechanism.name());
        }
    }
    Ok(exit::OK)
}
