//! CIDR parsing and client-ip resolution: never panic; the resolved client is the peer or one of the
//! forwarded addresses; an untrusted peer always resolves to itself.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_common::cidr::{IpNet, IpNetList};
use portcullis_common::client_ip::{resolve, ClientIpConfig, ClientIpSource};
use portcullis_common::props::parse_address;
use portcullis_common::testing::SharedMemoryStore;
use portcullis_common::Exchange;
use std::net::IpAddr;

const CONFIGS: &[&str] = &[
    r#"{}"#,
    r#"{"source":"x_forwarded_for","trusted_proxies":["10.0.0.0/8","::1/128"]}"#,
    r#"{"source":"x_forwarded_for","trusted_hops":2}"#,
    r#"{"source":"header","header":"x-real-ip","trusted_proxies":["10.0.0.1","127.0.0.0/8"]}"#,
    r#"{"source":"x_forwarded_for","trusted_proxies":["0.0.0.0/0","::/0"]}"#,
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let len = u.int_in_range(0..=48usize).unwrap_or(0).min(u.len());
    let cidr = String::from_utf8_lossy(u.bytes(len).unwrap_or(&[])).into_owned();
    if let Ok(net) = IpNet::parse(&cidr) {
        assert!(
            net.contains(net.addr()),
            "{cidr:?} does not contain its own address"
        );
        let _ = IpNetList::new(vec![net]);
    }
    let _ = serde_json::from_str::<IpNet>(&format!("{cidr:?}"));
    let config: ClientIpConfig =
        match serde_json::from_str(CONFIGS[u.choose_index(CONFIGS.len()).unwrap_or(0)]) {
            Ok(c) => c,
            Err(e) => panic!("seed config: {e}"),
        };
    if config.validate("client_ip").is_err() {
        panic!("seed config invalid");
    }
    let peer: IpAddr = if u.arbitrary().unwrap_or(false) {
        IpAddr::from(u.arbitrary::<[u8; 4]>().unwrap_or([10, 0, 0, 2]))
    } else {
        IpAddr::from(u.arbitrary::<[u8; 16]>().unwrap_or([0; 16]))
    };
    let forwarded = portcullis_fuzz::text(&mut u);
    let client = config.client_from(peer, Some(&forwarded));
    let trusted = if config.trusted_proxies.is_empty() {
        config.trusted_hops > 0
    } else {
        config.trusted_proxies.contains(peer)
    };
    if config.source == ClientIpSource::Peer || !trusted {
        assert_eq!(client, peer);
    } else if client != peer {
        let listed = forwarded
            .split(',')
            .filter_map(|e| parse_address(e.trim()))
            .any(|ip| ip == client);
        assert!(
            listed,
            "client {client} is neither the peer nor in {forwarded:?}"
        );
    }
    let store = SharedMemoryStore::default();
    let host = portcullis_fuzz::request(&mut u, &store);
    let mut ex = Exchange::new(Box::new(host));
    if let Some(ip) = resolve(&config, &mut ex) {
        assert_eq!(ex.client_ip(), Some(ip));
    }
});
