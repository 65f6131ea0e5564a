//! Properties whose names and encodings differ between Envoy and Kong's ngx_wasm_module, one function per
//! concept. Envoy returns integers as 8-byte little-endian values and `source.address` as `ip:port`;
//! ngx_wasm_module returns every property as a string, `source.address` without a port, and names Kong
//! concepts `kong.route_id` / `kong.service_id`.

use crate::host::Host;
use std::cell::Cell;
use std::net::IpAddr;

/// Which proxy we run in, learned from the first property that answers, so later lookups skip the other
/// host's names (each miss is a wasted host call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    #[default]
    Unknown = 0,
    Envoy = 1,
    Kong = 2,
}

// A wasm VM is single-threaded; thread-local also keeps parallel native tests independent.
thread_local! {
    static FLAVOR: Cell<Flavor> = const { Cell::new(Flavor::Unknown) };
}

pub fn flavor() -> Flavor {
    FLAVOR.with(Cell::get)
}

fn learn(f: Flavor) {
    FLAVOR.with(|c| c.set(f));
}

/// Finds out which proxy runs the filter, from a request context: only ngx_wasm_module (Kong's engine, in
/// Kong or in bare nginx) answers `ngx.*` properties (nginx variables, so only while a request runs). The
/// properties both hosts answer outside requests (`plugin_name`, `plugin_root_id`) cannot tell them apart.
pub fn detect_flavor(host: &dyn Host) -> Flavor {
    let flavor = if host.property(&["ngx", "pid"]).is_some() {
        Flavor::Kong
    } else {
        Flavor::Envoy
    };
    learn(flavor);
    flavor
}

/// Resets the learned flavor (tests run both encodings in one process).
pub fn reset_flavor() {
    learn(Flavor::Unknown);
}

/// A property as UTF-8 text. Envoy's string properties and all of Kong's are plain bytes.
pub fn decode_string(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

/// An integer property: Kong sends decimal text (`"200"`), Envoy 8 bytes little-endian.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let is_decimal = !bytes.is_empty() && bytes.len() <= 20 && bytes.iter().all(u8::is_ascii_digit);
    if is_decimal {
        return std::str::from_utf8(bytes).ok()?.parse().ok();
    }
    let raw: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(raw))
}

/// A boolean property: Kong sends `"true"`/`"false"`, Envoy one byte 0/1.
pub fn decode_bool(bytes: &[u8]) -> Option<bool> {
    match bytes {
        b"true" | [1] => Some(true),
        b"false" | [0] => Some(false),
        _ => None,
    }
}

/// Parses `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:5678` (IPv6 zone ids are not accepted).
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse().ok();
    }
    let (ip, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse().ok()
}

/// The address of the directly connected peer (before any X-Forwarded-For handling).
pub fn peer_ip(host: &dyn Host) -> Option<IpAddr> {
    if let Some(ip) = host
        .property(&["source", "address"])
        .and_then(|b| decode_string(&b))
        .and_then(|s| parse_address(&s))
    {
        return Some(ip);
    }
    host.property(&["ngx", "remote_addr"])
        .and_then(|b| decode_string(&b))
        .and_then(|s| parse_address(&s))
}

/// Reads only the current host's names once the host is known (the host detects itself on a request; an
/// unknown property costs a host call, and ngx_wasm_module logs an `[error]` for each). While it is unknown,
/// tries the Envoy names in order, then the Kong name, and learns from the one that answers.
fn string_property(host: &dyn Host, envoy: &[&[&str]], kong: &[&str]) -> Option<String> {
    let f = match host.flavor() {
        Flavor::Unknown => flavor(),
        known => known,
    };
    if f != Flavor::Kong {
        for name in envoy {
            if let Some(v) = host.property(name).and_then(|b| decode_string(&b)) {
                if !v.is_empty() {
                    learn(Flavor::Envoy);
                    return Some(v);
                }
            }
        }
    }
    if f != Flavor::Envoy {
        if let Some(v) = host.property(kong).and_then(|b| decode_string(&b)) {
            if !v.is_empty() {
                learn(Flavor::Kong);
                return Some(v);
            }
        }
    }
    None
}

/// Envoy: the matched route's name (`xds.route_name`; Envoy 1.40 no longer answers the older top-level
/// `route_name`, still tried second). Kong: the route's id (`kong.route_id`).
pub fn route_id(host: &dyn Host) -> Option<String> {
    string_property(
        host,
        &[&["xds", "route_name"], &["route_name"]],
        &["kong", "route_id"],
    )
}

/// Envoy: the upstream cluster's name (`xds.cluster_name`, then the older `cluster_name`). Kong: the
/// service's id (`kong.service_id`).
pub fn service_id(host: &dyn Host) -> Option<String> {
    string_property(
        host,
        &[&["xds", "cluster_name"], &["cluster_name"]],
        &["kong", "service_id"],
    )
}

/// The response status code once the response has started (Envoy `response.code`, integer-encoded;
/// ngx_wasm_module as text).
pub fn response_status(host: &dyn Host) -> Option<u16> {
    host.property(&["response", "code"])
        .and_then(|b| decode_u64(&b))
        .and_then(|c| u16::try_from(c).ok())
}

/// Sends this request to another upstream `host:port`. Kong: sets `kong.service.target` (a setter-only
/// property of ngx_wasm_module's Kong integration). Envoy has no such property (it routes by route match,
/// e.g. on a header the filter sets): skipped once the host is known to be Envoy, and otherwise harmless
/// there (Envoy stores unknown properties as filter state). Returns whether the host accepted it.
pub fn set_upstream_target(host: &mut dyn Host, target: &str) -> bool {
    if flavor() == Flavor::Envoy {
        return false;
    }
    host.set_property(&["kong", "service", "target"], target.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    #[test]
    fn upstream_target_is_kongs_service_target_property() {
        reset_flavor();
        let mut kong = FakeHost::new();
        assert!(set_upstream_target(&mut kong, "10.0.0.7:8080"));
        assert_eq!(
            kong.property_value(&["kong", "service", "target"])
                .as_deref(),
            Some(&b"10.0.0.7:8080"[..])
        );
        // A known Envoy has no such property: nothing is written.
        let mut envoy = FakeHost::new().with_property(&["route_name"], b"r");
        assert!(route_id(&envoy).is_some());
        assert!(!set_upstream_target(&mut envoy, "10.0.0.7:8080"));
        assert_eq!(envoy.property_value(&["kong", "service", "target"]), None);
        reset_flavor();
    }

    #[test]
    fn on_a_known_kong_only_kongs_names_are_read() {
        reset_flavor();
        let kong = crate::testing::RecordingHost::new(
            FakeHost::kong_request("GET", "/", "/")
                .with_property(&["kong", "route_id"], b"r-1")
                .with_property(&["kong", "service_id"], b"s-1"),
        );
        assert_eq!(route_id(&kong).as_deref(), Some("r-1"));
        assert_eq!(service_id(&kong).as_deref(), Some("s-1"));
        assert_eq!(
            kong.take(),
            vec!["property kong.route_id", "property kong.service_id"]
        );
        reset_flavor();
    }

    #[test]
    fn integers_decode_from_both_encodings() {
        assert_eq!(decode_u64(&200u64.to_le_bytes()), Some(200));
        assert_eq!(decode_u64(b"200"), Some(200));
        assert_eq!(decode_u64(b"0"), Some(0));
        assert_eq!(decode_u64(&u64::MAX.to_le_bytes()), Some(u64::MAX));
        assert_eq!(decode_u64(b""), None);
        assert_eq!(decode_u64(b"20x"), None);
        assert_eq!(decode_u64(&[1, 2, 3]), None);
        assert_eq!(decode_u64(b"99999999999999999999999"), None);
    }

    #[test]
    fn booleans_decode_from_both_encodings() {
        assert_eq!(decode_bool(&[1]), Some(true));
        assert_eq!(decode_bool(b"false"), Some(false));
        assert_eq!(decode_bool(b"yes"), None);
    }

    #[test]
    fn addresses_parse_with_and_without_ports() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_address("10.1.2.3"), Some(v4));
        assert_eq!(parse_address("10.1.2.3:443"), Some(v4));
        assert_eq!(parse_address("2001:db8::1"), Some(v6));
        assert_eq!(parse_address("[2001:db8::1]:8080"), Some(v6));
        for bad in [
            "",
            "10.1.2",
            "10.1.2.3:x",
            "[::1",
            "host:80",
            "1.2.3.4:99999",
        ] {
            assert_eq!(parse_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn peer_ip_reads_envoy_address_with_port() {
        let host = FakeHost::new().with_property(&["source", "address"], b"127.0.0.9:51234");
        assert_eq!(peer_ip(&host), "127.0.0.9".parse().ok());
    }

    #[test]
    fn peer_ip_reads_kong_address_without_port_and_falls_back_to_ngx() {
        let host = FakeHost::new().with_property(&["source", "address"], b"192.0.2.7");
        assert_eq!(peer_ip(&host), "192.0.2.7".parse().ok());
        let host = FakeHost::new().with_property(&["ngx", "remote_addr"], b"::1");
        assert_eq!(peer_ip(&host), "::1".parse().ok());
    }

    // One test for the flavor-dependent lookups: the learned flavor is process-wide.
    #[test]
    fn route_and_service_ids_use_each_hosts_names() {
        reset_flavor();
        let envoy = FakeHost::new()
            .with_property(&["route_name"], b"orders")
            .with_property(&["cluster_name"], b"orders_backend")
            .with_property(&["response", "code"], &503u64.to_le_bytes());
        assert_eq!(route_id(&envoy).as_deref(), Some("orders"));
        assert_eq!(service_id(&envoy).as_deref(), Some("orders_backend"));
        assert_eq!(response_status(&envoy), Some(503));
        assert_eq!(flavor(), Flavor::Envoy);

        reset_flavor();
        let kong = FakeHost::new()
            .with_property(&["kong", "route_id"], b"8f0b-route")
            .with_property(&["kong", "service_id"], b"a1c2-service")
            .with_property(&["response", "code"], b"503");
        assert_eq!(route_id(&kong).as_deref(), Some("8f0b-route"));
        assert_eq!(flavor(), Flavor::Kong);
        assert_eq!(service_id(&kong).as_deref(), Some("a1c2-service"));
        assert_eq!(response_status(&kong), Some(503));
        reset_flavor();
        assert_eq!(route_id(&FakeHost::new()), None);

        reset_flavor();
        let envoy_1_40 = FakeHost::new()
            .with_property(&["xds", "route_name"], b"orders")
            .with_property(&["xds", "cluster_name"], b"orders_backend");
        assert_eq!(route_id(&envoy_1_40).as_deref(), Some("orders"));
        assert_eq!(service_id(&envoy_1_40).as_deref(), Some("orders_backend"));
        reset_flavor();
    }
}
