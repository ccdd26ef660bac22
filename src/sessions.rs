//! `sessiongate sessions list|revoke` (SPEC §12): a user's sessions in the
//! configured store, as a table for a person or `--json` for a script.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sessiongate::Config;
use sessiongate::session::cookie::Sid;
use sessiongate::session::store::{Store, valid_user};
use sessiongate::settings::Settings;
use sessiongate::users_api::{listing, rfc3339};

use crate::cli::SessionsCommand;

/// Runs one `sessions` command; an error is exit 1 with its reason.
pub fn run(command: SessionsCommand) -> Result<()> {
    let config = match &command {
        SessionsCommand::List { config, .. } | SessionsCommand::Revoke { config, .. } => {
            config.config.clone()
        }
    };
    crate::runtime(1)?.block_on(async {
        // Inside the runtime: a Redis connection starts its task at once.
        let store = open(&config)?;
        match command {
            SessionsCommand::List { user, json, .. } => {
                let user = checked(&user)?;
                let bound = store
                    .sessions_of(user)
                    .await
                    .with_context(|| format!("the session store ({})", store.describe()))?;
                if json {
                    println!("{}", listing(user, &bound));
                } else if bound.is_empty() {
                    println!("no live sessions for this user");
                } else {
                    println!("{:<43}  {:<24}  {:<24}", "SID", "CREATED", "EXPIRES");
                    for b in &bound {
                        let (created, expires) = (rfc3339(b.created_ms), rfc3339(b.expires_ms));
                        println!("{:<43}  {created:<24}  {expires:<24}", b.sid.as_str());
                    }
                    println!("{} session(s)", bound.len());
                }
            }
            SessionsCommand::Revoke {
                user: Some(user),
                json,
                ..
            } => {
                let user = checked(&user)?;
                let destroyed = store
                    .revoke_user(user, None)
                    .await
                    .with_context(|| format!("the session store ({})", store.describe()))?;
                match json {
                    true => println!("{}", serde_json::json!({ "destroyed": destroyed })),
                    false => println!("destroyed {destroyed} session(s)"),
                }
            }
            SessionsCommand::Revoke { sid, json, .. } => {
                let text = sid.context("--user or --sid")?;
                let Some(sid) = Sid::parse(&text) else {
                    bail!("{text:?} is not a sid (43 base64url characters)");
                };
                let found = store
                    .revoke_sid(&sid)
                    .await
                    .with_context(|| format!("the session store ({})", store.describe()))?;
                if !found {
                    bail!("no such session");
                }
                match json {
                    true => println!("{}", serde_json::json!({ "destroyed": 1 })),
                    false => println!("destroyed 1 session"),
                }
            }
        }
        Ok(())
    })
}

/// The configured store; the memory store lives inside a running
/// sessiongate, out of reach of another process.
fn open(path: &Path) -> Result<Store> {
    let config = Config::load(path)?;
    if config.store.kind == sessiongate::config::StoreKind::Memory {
        bail!(
            "{}: store.kind = \"memory\" lives inside the running proxy; \
             use the admin API, or a Redis store",
            path.display()
        );
    }
    let settings = Settings::new(config);
    Ok(Store::open(
        &settings.config.store,
        settings.policy,
        settings.timeouts.store,
    )?)
}

fn checked(user: &str) -> Result<&str> {
    match valid_user(user) {
        true => Ok(user),
        false => bail!("--user must be 1 to 256 visible ASCII characters"),
    }
}
