//! Who the client is: the directly connected peer, or an address from `x-forwarded-for` (or a named header
//! such as `x-real-ip`) — trusted only when the peer is a known proxy. Any filter embeds [`ClientIpConfig`]
//! as its `client_ip` field and calls [`resolve`], which records the result with
//! [`Exchange::set_client_ip`] so later policies (rate limits, templates' `${client_ip}`) see the same client.
//!
//! All lines of the header are read, in order, as one comma-separated list. The forwarded list is walked from the right (the hop our trusted proxy appended) to the left, skipping
//! hops that are trusted — by address (`trusted_proxies`) or by position (`trusted_hops`, Envoy's
//! `xff_num_trusted_hops`) — and the first untrusted hop is the client. Everything left of it was written by
//! the client or an untrusted proxy and is ignored, so a client cannot pick its address by sending
//! `x-forwarded-for: 1.2.3.4`.

use crate::cidr::IpNetList;
use crate::config::ConfigError;
use crate::exchange::Exchange;
use crate::http::HeaderName;
use crate::props::parse_address;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Most forwarded hops examined; a longer header is treated as if it ended there (its left part is
/// attacker-controlled anyway).
pub const MAX_HOPS: usize = 64;

/// Most `trusted_hops` accepted.
pub const MAX_TRUSTED_HOPS: u32 = 16;

/// Where the client address comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientIpSource {
    /// The directly connected peer; forwarding headers are ignored.
    #[default]
    Peer,
    /// The `x-forwarded-for` header, when the peer is a trusted proxy.
    XForwardedFor,
    /// The header named in `header` (e.g. `x-real-ip`), when the peer is a trusted proxy.
    Header,
}

/// How to find the client address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIpConfig {
    /// `peer` (default), `x_forwarded_for`, or `header` (the header named in `header`).
    #[serde(default)]
    pub source: ClientIpSource,
    /// The header holding the client address when `source` is `header` (a comma-separated list like
    /// `x-forwarded-for`, or a single address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderName>,
    /// Proxies whose forwarding headers are believed (CIDRs or addresses). The header is read only when the
    /// peer is in this list, and hops in this list are skipped when walking the header from the right.
    #[serde(default)]
    pub trusted_proxies: IpNetList,
    /// Envoy's `xff_num_trusted_hops`: how many right-most hops of the header are trusted whatever their
    /// address (the client is the `trusted_hops`-th address from the right). With an empty
    /// `trusted_proxies`, a non-zero value trusts every peer (use only behind a proxy that always rewrites
    /// the header).
    #[serde(default)]
    pub trusted_hops: u32,
}

impl ClientIpConfig {
    /// Cross-field checks; `path` is where this config sits (e.g. `client_ip`).
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let at = |field: &str| {
            if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            }
        };
        match (self.source, &self.header) {
            (ClientIpSource::Header, None) => {
                return Err(ConfigError::at(
                    at("header"),
                    "is required when source is \"header\"",
                ))
            }
            (ClientIpSource::Peer | ClientIpSource::XForwardedFor, Some(_)) => {
                return Err(ConfigError::at(
                    at("header"),
                    "is only used when source is \"header\"",
                ))
            }
            _ => {}
        }
        if self.trusted_hops > MAX_TRUSTED_HOPS {
            return Err(ConfigError::at(
                at("trusted_hops"),
                format!("must be at most {MAX_TRUSTED_HOPS}"),
            ));
        }
        let forwarded = self.source != ClientIpSource::Peer;
        if forwarded && self.trusted_proxies.is_empty() && self.trusted_hops == 0 {
            return Err(ConfigError::at(
                at("trusted_proxies"),
                "a forwarded source needs trusted_proxies (or trusted_hops): otherwise any client could choose its address",
            ));
        }
        if !forwarded && (!self.trusted_proxies.is_empty() || self.trusted_hops > 0) {
            return Err(ConfigError::at(
                at("source"),
                "trusted_proxies and trusted_hops have no effect with source \"peer\"",
            ));
        }
        Ok(())
    }

    fn header_name(&self) -> Option<&str> {
        match self.source {
            ClientIpSource::Peer => None,
            ClientIpSource::XForwardedFor => Some("x-forwarded-for"),
            ClientIpSource::Header => self.header.as_ref().map(HeaderName::as_str),
        }
    }

    fn peer_is_trusted(&self, peer: IpAddr) -> bool {
        if self.trusted_proxies.is_empty() {
            self.trusted_hops > 0
        } else {
            self.trusted_proxies.contains(peer)
        }
    }

    /// The client address from a peer and a forwarded header value (pure; see [`resolve`]).
    pub fn client_from(&self, peer: IpAddr, forwarded: Option<&str>) -> IpAddr {
        if self.source == ClientIpSource::Peer || !self.peer_is_trusted(peer) {
            return peer;
        }
        let Some(list) = forwarded else {
            return peer;
        };
        // Right to left: hop 1 was appended by the peer itself. `last` is the left-most address seen so far:
        // the answer when every hop is trusted (nginx real_ip_recursive) or the list turns to garbage.
        let mut last = peer;
        for (position, entry) in list.rsplit(',').take(MAX_HOPS).enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some(ip) = parse_address(entry) else {
                // Unparseable: written by whoever is left of `last`; trust nothing beyond this point.
                return last;
            };
            let trusted_by_position = (position as u64) + 1 < u64::from(self.trusted_hops);
            if !trusted_by_position && !self.trusted_proxies.contains(ip) {
                return ip;
            }
            last = ip;
        }
        last
    }
}

/// Resolves the client address, records it on the exchange (for every later policy) and returns it.
/// `None` only when the host reports no peer address at all.
pub fn resolve(config: &ClientIpConfig, ex: &mut Exchange) -> Option<IpAddr> {
    let peer = ex.peer_ip()?;
    let client = match config.header_name() {
        Some(name) if config.peer_is_trusted(peer) => {
            // Every line of the header, in order: a proxy may append its hop as a separate line, and a
            // client-sent first line must not win (Envoy joins the lines; ngx_wasm_module may not).
            let lines = ex.request_header_lines(name);
            let forwarded = (!lines.is_empty()).then(|| lines.join(","));
            config.client_from(peer, forwarded.as_deref())
        }
        _ => peer,
    };
    ex.set_client_ip(client);
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;
    use crate::testing::FakeHost;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn config(json: &str) -> ClientIpConfig {
        let c: ClientIpConfig = parse_config(json.as_bytes()).unwrap();
        c.validate("client_ip").unwrap();
        c
    }

    #[test]
    fn resolution_table() {
        let xff_lb = r#"{"source":"x_forwarded_for","trusted_proxies":["10.0.0.0/8"]}"#;
        let hops1 = r#"{"source":"x_forwarded_for","trusted_hops":1}"#;
        let hops2 = r#"{"source":"x_forwarded_for","trusted_hops":2}"#;
        let real_ip = r#"{"source":"header","header":"X-Real-IP","trusted_proxies":["10.0.0.1"]}"#;
        let cases: &[(&str, &str, Option<&str>, &str)] = &[
            // (config, peer, header value, expected client)
            ("{}", "203.0.113.5", Some("1.1.1.1"), "203.0.113.5"),
            (xff_lb, "10.0.0.2", Some("198.51.100.7"), "198.51.100.7"),
            (xff_lb, "10.0.0.2", None, "10.0.0.2"),
            // spoofing: an untrusted peer's header is ignored
            (xff_lb, "203.0.113.5", Some("1.1.1.1"), "203.0.113.5"),
            // spoofing: the client prepends a fake hop; the right-most untrusted hop wins
            (
                xff_lb,
                "10.0.0.2",
                Some("1.1.1.1, 198.51.100.7"),
                "198.51.100.7",
            ),
            // trusted internal hops are skipped
            (
                xff_lb,
                "10.0.0.2",
                Some("198.51.100.7, 10.1.1.1, 10.2.2.2"),
                "198.51.100.7",
            ),
            // every hop trusted: the left-most
            (xff_lb, "10.0.0.2", Some("10.9.9.9, 10.1.1.1"), "10.9.9.9"),
            // garbage stops the walk at the last good hop
            (
                xff_lb,
                "10.0.0.2",
                Some("1.1.1.1, not-an-ip, 10.1.1.1"),
                "10.1.1.1",
            ),
            (xff_lb, "10.0.0.2", Some("<script>"), "10.0.0.2"),
            // empty entries and ports are tolerated
            (
                xff_lb,
                "10.0.0.2",
                Some(" 198.51.100.7:4711 ,, "),
                "198.51.100.7",
            ),
            (xff_lb, "10.0.0.2", Some("[2001:db8::7]:443"), "2001:db8::7"),
            // an IPv4-mapped peer is still the trusted proxy
            (
                xff_lb,
                "::ffff:10.0.0.2",
                Some("198.51.100.7"),
                "198.51.100.7",
            ),
            // Envoy's documented example: XFF "192.0.2.10, 203.0.113.1", 1 trusted hop → 203.0.113.1
            (
                hops1,
                "198.51.100.1",
                Some("192.0.2.10, 203.0.113.1"),
                "203.0.113.1",
            ),
            (
                hops2,
                "198.51.100.1",
                Some("192.0.2.10, 203.0.113.1"),
                "192.0.2.10",
            ),
            // too few hops for the trusted count: the left-most
            (hops2, "198.51.100.1", Some("203.0.113.1"), "203.0.113.1"),
            (real_ip, "10.0.0.1", Some("198.51.100.9"), "198.51.100.9"),
            (real_ip, "10.0.0.3", Some("198.51.100.9"), "10.0.0.3"),
        ];
        for (json, peer, header, want) in cases {
            let c = config(json);
            assert_eq!(
                c.client_from(ip(peer), *header),
                ip(want),
                "{json} peer={peer} header={header:?}"
            );
        }
    }

    #[test]
    fn overlong_headers_are_cut_to_a_bounded_walk() {
        let c = config(r#"{"source":"x_forwarded_for","trusted_proxies":["10.0.0.0/8"]}"#);
        let mut hops: Vec<String> = vec!["198.51.100.1".into()];
        hops.extend((0..1000).map(|i| format!("10.0.{}.{}", i / 250, i % 250)));
        let client = c.client_from(ip("10.0.0.2"), Some(&hops.join(",")));
        assert!(c.trusted_proxies.contains(client), "{client}");
    }

    #[test]
    fn resolve_records_the_client_for_later_policies() {
        let host = FakeHost::request("GET", "/")
            .with_property(&["source", "address"], b"10.0.0.2:5555")
            .with_header("x-forwarded-for", "1.1.1.1, 198.51.100.7");
        let mut ex = Exchange::new(Box::new(host));
        let c = config(r#"{"source":"x_forwarded_for","trusted_proxies":["10.0.0.0/8"]}"#);
        assert_eq!(resolve(&c, &mut ex), Some(ip("198.51.100.7")));
        assert_eq!(ex.client_ip(), Some(ip("198.51.100.7")));
        assert_eq!(ex.peer_ip(), Some(ip("10.0.0.2")));
    }

    #[test]
    fn repeated_header_lines_are_read_in_order() {
        // the client sends a spoofed line, the trusted proxy appends the real hop as another line
        let host = FakeHost::request("GET", "/")
            .with_property(&["source", "address"], b"10.0.0.2:5555")
            .with_header("x-forwarded-for", "198.51.100.1")
            .with_header("x-forwarded-for", "203.0.113.7");
        let mut ex = Exchange::new(Box::new(host));
        let c = config(r#"{"source":"x_forwarded_for","trusted_proxies":["10.0.0.0/8"]}"#);
        assert_eq!(resolve(&c, &mut ex), Some(ip("203.0.113.7")));
    }

    #[test]
    fn untrusted_peer_does_not_even_read_the_header() {
        let host = FakeHost::request("GET", "/")
            .with_property(&["source", "address"], b"203.0.113.1:5555")
            .with_header("x-forwarded-for", "1.1.1.1");
        let mut ex = Exchange::new(Box::new(host.clone()));
        let c = config(r#"{"source":"x_forwarded_for","trusted_proxies":["10.0.0.0/8"]}"#);
        assert_eq!(resolve(&c, &mut ex), Some(ip("203.0.113.1")));
        assert_eq!(host.state.borrow().header_reads, 0);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"source":"header"}"#, "client_ip.header: is required"),
            (
                r#"{"source":"x_forwarded_for"}"#,
                "client_ip.trusted_proxies: a forwarded source needs",
            ),
            (
                r#"{"trusted_proxies":["10.0.0.0/8"]}"#,
                "client_ip.source: trusted_proxies and trusted_hops have no effect",
            ),
            (
                r#"{"source":"x_forwarded_for","header":"x-real-ip","trusted_hops":1}"#,
                "client_ip.header: is only used",
            ),
            (
                r#"{"source":"x_forwarded_for","trusted_hops":17}"#,
                "client_ip.trusted_hops: must be at most 16",
            ),
        ];
        for (json, want) in cases {
            let c: ClientIpConfig = parse_config(json.as_bytes()).unwrap();
            let err = c.validate("client_ip").unwrap_err().to_string();
            assert!(err.starts_with(want), "{json}: {err}");
        }
        let err = parse_config::<ClientIpConfig>(br#"{"trusted_proxies":["10.0.0.0/99"]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("trusted_proxies[0]: "), "{err}");
        let err = parse_config::<ClientIpConfig>(br#"{"source":"forwarded"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("source: unknown variant"), "{err}");
    }
}
