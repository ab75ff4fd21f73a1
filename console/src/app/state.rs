//! `AppState`: everything a request reaches, shared by the JSON API, the web console and the
//! service layer beneath them. `serve` builds it once; handlers get a clone (every field is
//! cheap to clone).

use std::sync::Arc;

use crate::auth::SecretDigest;
use crate::clock::Clock;
use crate::liveness::LivenessMap;
use crate::status::Thresholds;
use crate::store::Store;

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub live: Arc<LivenessMap>,
    pub clock: Clock,
    pub thresholds: Thresholds,
    pub admin_token: SecretDigest,
    /// Bounds Argon2 work (19 MiB and tens of milliseconds each): a few hashes at once, a
    /// bounded queue, and backoff per user name and address after failures.
    pub credentials: Arc<crate::throttle::Throttle>,
    /// The URL servers reach this console at; install commands and scripts carry it.
    pub public_url: String,
    /// The URLs agents talk to (`serve --agent-url`, else `public_url`), in order; install
    /// scripts and commands write them all into the agent config.
    pub agent_urls: Arc<[String]>,
    /// The template environment install scripts are rendered with.
    pub templates: Arc<tasknode_render::Templates>,
    /// The agent binaries install scripts download (none without `--agent-dir`).
    pub artifacts: Arc<tasknode_render::artifacts::AgentArtifacts>,
    /// With `serve --tls`: the console's CA certificate (PEM), which install scripts and agents
    /// pin.
    pub console_ca: Option<Arc<str>>,
    /// With `serve --dist`: the release directory whose repositories and key are served.
    pub dist: Option<Arc<std::path::Path>>,
    /// Wakes agents' long polls when their group has work.
    pub dispatch: Arc<crate::tasks::Dispatch>,
    /// How much task log VPC servers may push (the store keeps it).
    pub log_limits: crate::store::LogLimits,
    /// Signs the tokens the console reads classic servers' logs with.
    pub log_key: Arc<ed25519_dalek::SigningKey>,
    /// Its public half, as heartbeat answers carry it.
    pub log_key_public: Arc<str>,
    /// Runs rollouts; heartbeat answers carry the version it wants each server to run.
    pub rollouts: Arc<crate::rollout::RolloutEngine>,
    /// Load balancers whose `X-Forwarded-For` names the client (`serve --trusted-proxy`); see
    /// [`super::ClientAddr`].
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
    /// What the console counts as it happens (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The web console's own part (its sessions and page templates), which only `web/` reads.
    pub web: Arc<crate::web::Web>,
}
