//! What `check` prints: the configuration as the proxy will use it, without
//! a secret or a password.

use super::duration::show;
use super::{Config, OnError, StoreKind, TrackingMode};

impl Config {
    /// What the proxy would do with this configuration, for `check`.
    pub fn describe(&self) -> String {
        let c = &self.cookie;
        let s = &self.session;
        let servers: Vec<String> = self
            .upstreams
            .servers
            .iter()
            .map(|s| match s.weight {
                1 => s.url.to_string(),
                w => format!("{} (weight {w})", s.url),
            })
            .collect();
        let health = match &self.upstreams.health {
            Some(h) => format!(
                "GET {} every {}, out after {} failures, back after {} successes",
                h.path,
                show(h.interval),
                h.unhealthy_threshold,
                h.healthy_threshold
            ),
            None => "passive only".into(),
        };
        let t = &self.timeouts;
        let mut attributes = vec![format!("Path={}", c.path)];
        if let Some(domain) = &c.domain {
            attributes.push(format!("Domain={domain}"));
        }
        if c.secure {
            attributes.push("Secure".into());
        }
        if c.http_only {
            attributes.push("HttpOnly".into());
        }
        attributes.push(format!("SameSite={:?}", c.same_site));
        let st = &self.store;
        let store = match st.kind {
            StoreKind::Memory => "memory (this process only; sessions end when it exits)".into(),
            _ => format!(
                "{}; keys {}<sid>, {}, call deadline {}{}{}",
                st.target(),
                st.key_prefix,
                match st.on_error {
                    OnError::FailClosed => "fail_closed (503 when down)",
                    OnError::FailOpen => "fail_open (forward as unavailable when down)",
                },
                show(st.timeout),
                match st.wait_replicas {
                    0 => String::new(),
                    n => format!(", a write counts once {n} replica(s) hold it"),
                },
                match &st.cache {
                    None => String::new(),
                    Some(c) => format!(
                        "; cache of {} sessions ({} tracking), touched at most every {}",
                        c.max_entries,
                        match c.mode {
                            TrackingMode::Default => "default",
                            TrackingMode::Bcast => "BCAST",
                        },
                        show(c.touch_interval)
                    ),
                },
            ),
        };
        let mut text = format!(
            "listen     {listen} ({protocols}), {threads}\n\
             upstreams  {servers} (round-robin)\n\
             health     {health}; out for {fail_timeout} after {max_fails} failed requests\n\
             timeouts   connect {connect}, response {response}, body idle {body}, request head {head}, \
             keep-alive {keepalive}, drain {drain}\n\
             cookie     {name}; {attributes}\n\
             secrets    {n} (signing with {signer}; all verify)\n\
             session    idle {idle}, absolute {absolute}, headers {prefix}*, at most {max} bytes{users}\n\
             store      {store}\n",
            listen = self.server.listen,
            protocols = match self.server.tls.is_some() {
                true => "TLS 1.2/1.3, HTTP/1.1 and h2 by ALPN",
                false => "HTTP/1.1 and h2c",
            },
            threads = match self.server.worker_threads {
                0 => "one worker thread per CPU core".to_string(),
                n => format!("{n} worker thread(s)"),
            },
            servers = servers.join(", "),
            fail_timeout = show(self.upstreams.fail_timeout),
            max_fails = self.upstreams.max_fails,
            connect = show(t.upstream_connect),
            response = show(t.upstream_response),
            body = show(t.body_idle),
            head = show(t.request_header),
            keepalive = show(t.keepalive),
            drain = show(t.drain),
            name = c.name,
            attributes = attributes.join("; "),
            n = c.secrets.len(),
            signer = c.secrets[0].origin,
            idle = show(s.idle_timeout),
            absolute = show(s.absolute_timeout),
            prefix = s.header_prefix,
            max = s.max_bytes,
            users = super::expose::describe(s),
        );
        match &self.admin {
            Some(admin) => text.push_str(&admin.describe()),
            None => text.push_str("admin      off"),
        }
        text.push('\n');
        text.push_str(&self.log.describe());
        text.push('\n');
        text.push_str(&self.describe_edge());
        text
    }
}
