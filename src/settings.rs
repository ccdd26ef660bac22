//! The configuration turned, once, into what the process runs with: the
//! parsed [`Config`] and the values derived from it (every deadline, the
//! session policy). One immutable value, shared behind an `Arc`, so that a
//! reload can swap it whole.

use crate::config::Config;
use crate::session::store::SessionPolicy;
use crate::timeouts::Timeouts;

/// What the process runs with.
#[derive(Debug)]
pub struct Settings {
    /// The configuration as read.
    pub config: Config,
    /// Every deadline.
    pub timeouts: Timeouts,
    /// How long sessions live and how large they grow.
    pub policy: SessionPolicy,
}

impl Settings {
    /// Derives the settings of a validated configuration.
    pub fn new(config: Config) -> Settings {
        Settings {
            timeouts: Timeouts::new(&config),
            policy: SessionPolicy {
                idle: config.session.idle_timeout,
                absolute: config.session.absolute_timeout,
                max_bytes: config.session.max_bytes,
            },
            config,
        }
    }
}
