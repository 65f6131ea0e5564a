//! IP networks in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, a bare address = one host) as a checked
//! config type, and lists of them. IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, what a dual-stack
//! listener reports for an IPv4 client) match IPv4 networks, and `::ffff:0:0/96`-style networks match
//! IPv4 addresses: both sides are compared in their canonical (unmapped) form.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most networks one list may hold: a bound on per-request work (a linear scan), far above real use.
pub const MAX_NETWORKS: usize = 1024;

/// An IP network: an address with its host bits cleared and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// An IPv4-mapped IPv6 address as IPv4; any other address unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn mask_v4(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let bits = u32::from(addr);
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(bits & mask)
}

fn mask_v6(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let bits = u128::from(addr);
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from(bits & mask)
}

impl IpNet {
    /// Builds a network, clearing host bits. `None` when the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        // A mapped network with a prefix covering the whole ::ffff:0:0/96 block is an IPv4 network.
        if let IpAddr::V6(v6) = addr {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return IpNet::new(IpAddr::V4(v4), prefix.checked_sub(96)?);
            }
        }
        match addr {
            IpAddr::V4(v4) if prefix <= 32 => Some(IpNet {
                addr: IpAddr::V4(mask_v4(v4, prefix)),
                prefix,
            }),
            IpAddr::V6(v6) if prefix <= 128 => Some(IpNet {
                addr: IpAddr::V6(mask_v6(v6, prefix)),
                prefix,
            }),
            _ => None,
        }
    }

    /// Parses `addr/prefix` or a bare address (a single host: /32 or /128).
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let bad = || format!("{text:?} is not an IP address or CIDR network (like \"10.0.0.0/8\")");
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => {
                // Only plain decimal digits: "+8", " 8" or "08x" are typos, not prefixes.
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (a, Some(p.parse::<u8>().map_err(|_| bad())?))
            }
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        IpNet::new(addr, prefix).ok_or_else(|| {
            format!(
                "{text:?}: prefix /{prefix} is longer than an {} address",
                if addr.is_ipv4() { "IPv4" } else { "IPv6" }
            )
        })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip, self.prefix) == net,
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip, self.prefix) == net,
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        IpNet::parse(s)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        IpNet::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A list of networks; at most [`MAX_NETWORKS`] (checked while deserializing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpNetList(Vec<IpNet>);

impl IpNetList {
    pub fn new(nets: Vec<IpNet>) -> Result<IpNetList, String> {
        if nets.len() > MAX_NETWORKS {
            return Err(format!(
                "{} networks is more than the maximum of {MAX_NETWORKS}",
                nets.len()
            ));
        }
        Ok(IpNetList(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &IpNet> {
        self.0.iter()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(ip))
    }
}

impl<'de> Deserialize<'de> for IpNetList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let nets = Vec::<IpNet>::deserialize(d)?;
        IpNetList::new(nets).map_err(de::Error::custom)
    }
}

impl Serialize for IpNetList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl schemars::JsonSchema for IpNet {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IpNet".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 2,
            "maxLength": 64,
            "description": "An IPv4 or IPv6 address or CIDR network, e.g. \"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"."
        })
    }
}

impl schemars::JsonSchema for IpNetList {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IpNetList".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "array",
            "maxItems": MAX_NETWORKS,
            "items": generator.subschema_for::<IpNet>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        IpNet::parse(s).unwrap()
    }

    #[test]
    fn membership_table() {
        let cases = [
            // (network, address, inside?)
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "10.0.0.1", false),
            ("192.0.2.7/32", "192.0.2.7", true),
            ("192.0.2.7/32", "192.0.2.8", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("2001:db8::1/128", "2001:db8::1", true),
            ("2001:db8::1/128", "2001:db8::2", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            // host bits in the config are cleared, not an error
            ("10.1.2.3/8", "10.9.9.9", true),
            // IPv4-mapped IPv6 client against IPv4 networks
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "::ffff:11.1.2.3", false),
            ("0.0.0.0/0", "::ffff:1.2.3.4", true),
            // mapped networks against IPv4 clients
            ("::ffff:10.0.0.0/104", "10.4.5.6", true),
            ("::ffff:10.0.0.0/104", "11.4.5.6", false),
            ("::ffff:0:0/96", "198.51.100.1", true),
            // IPv4-compatible (deprecated, not mapped) addresses stay IPv6
            ("10.0.0.0/8", "::10.1.2.3", false),
            ("::1/128", "::1", true),
            ("::1/128", "127.0.0.1", false),
        ];
        for (n, a, want) in cases {
            assert_eq!(net(n).contains(ip(a)), want, "{n} ∋ {a}");
        }
    }

    #[test]
    fn parse_normalises_and_rejects_bad_input() {
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(net("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.0/ 8",
            "host.example",
            "1.2.3.4:80",
            "::ffff:10.0.0.0/95x",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IpNet::parse("10.0.0.0/33")
            .unwrap_err()
            .contains("longer than an IPv4"));
    }

    #[test]
    fn lists_deserialize_with_a_bound() {
        let list: IpNetList = serde_json::from_str(r#"["10.0.0.0/8", "::1"]"#).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.contains(ip("::ffff:10.0.0.1")));
        assert!(list.contains(ip("::1")));
        assert!(!list.contains(ip("192.0.2.1")));
        let many: Vec<String> = (0..=MAX_NETWORKS).map(|_| "\"10.0.0.1\"".into()).collect();
        let err = serde_json::from_str::<IpNetList>(&format!("[{}]", many.join(","))).unwrap_err();
        assert!(err.to_string().contains("more than the maximum"), "{err}");
        let err = serde_json::from_str::<IpNetList>(r#"["10.0.0.0/40"]"#).unwrap_err();
        assert!(err.to_string().contains("/40"), "{err}");
    }
}
