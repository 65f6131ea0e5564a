//! The policy as xDS resources (Envoy's protos from `envoy-types`): one listener whose connection manager
//! takes its routes over RDS and each chain filter's config over ECDS, one route configuration, one cluster
//! per upstream, and one `TypedExtensionConfig` (a wasm filter config) per chain item. The shape is the one
//! `render --target envoy` writes as static config (both follow [`crate::shape`]).

use crate::policy::PolicyFile;
use crate::shape::{self, HeaderMatch};
use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::extensions::wasm::v3 as wasm;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf::{Any, Duration, StringValue};
use prost::{Message, Name};
use std::collections::{BTreeMap, HashMap};

pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const FILTER_CONFIG_TYPE: &str =
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// The order updates go out in: clusters before the listener and routes that use them, filter configs last.
pub const TYPES: [&str; 4] = [CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, FILTER_CONFIG_TYPE];

/// Named resources of each type URL.
pub type Resources = BTreeMap<&'static str, Vec<(String, Any)>>;

fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

fn address(addr: std::net::SocketAddr) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

/// "Over the same ADS stream".
fn ads() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

/// Whether two lists of resources of `type_url` say the same. Route configurations hold protobuf maps
/// (`typed_per_filter_config`), which prost encodes in hash order, so those are compared decoded.
pub fn same(type_url: &str, a: &[(String, Any)], b: &[(String, Any)]) -> bool {
    if type_url != ROUTE_TYPE {
        return a == b;
    }
    let decode = |items: &[(String, Any)]| -> Vec<Option<route::RouteConfiguration>> {
        items
            .iter()
            .map(|(_, any)| route::RouteConfiguration::decode(any.value.as_slice()).ok())
            .collect()
    };
    a.len() == b.len() && decode(a) == decode(b)
}

pub fn resources(p: &PolicyFile) -> Resources {
    let mut out = Resources::new();
    out.insert(CLUSTER_TYPE, clusters(p));
    out.insert(
        LISTENER_TYPE,
        vec![(shape::LISTENER.to_string(), any(&listener(p)))],
    );
    out.insert(
        ROUTE_TYPE,
        vec![(
            shape::ROUTE_CONFIG.to_string(),
            any(&route_configuration(p)),
        )],
    );
    out.insert(FILTER_CONFIG_TYPE, filter_configs(p));
    out
}

fn clusters(p: &PolicyFile) -> Vec<(String, Any)> {
    p.upstreams
        .iter()
        .map(|(name, up)| {
            let ep = shape::endpoint(up);
            let kind = if ep.is_ip() {
                cluster::cluster::DiscoveryType::Static
            } else {
                cluster::cluster::DiscoveryType::StrictDns
            };
            let target = endpoint::Endpoint {
                address: Some(core::Address {
                    address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                        address: ep.host.clone(),
                        port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                            u32::from(ep.port),
                        )),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            };
            let transport_socket = ep.tls.then(|| core::TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
                    &UpstreamTlsContext {
                        sni: ep.host.clone(),
                        ..Default::default()
                    },
                ))),
            });
            let c = cluster::Cluster {
                name: name.clone(),
                cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
                    kind as i32,
                )),
                connect_timeout: Some(Duration {
                    seconds: i64::try_from(up.connect_timeout_ms / 1000).unwrap_or(i64::MAX),
                    nanos: i32::try_from((up.connect_timeout_ms % 1000) * 1_000_000).unwrap_or(0),
                }),
                load_assignment: Some(endpoint::ClusterLoadAssignment {
                    cluster_name: name.clone(),
                    endpoints: vec![endpoint::LocalityLbEndpoints {
                        lb_endpoints: vec![endpoint::LbEndpoint {
                            host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                                target,
                            )),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                transport_socket,
                ..Default::default()
            };
            (name.clone(), any(&c))
        })
        .collect()
}

fn listener(p: &PolicyFile) -> listener::Listener {
    let mut http_filters: Vec<hcm::HttpFilter> = Vec::new();
    for r in &p.routes {
        for (i, item) in r.chain.iter().enumerate() {
            http_filters.push(hcm::HttpFilter {
                name: shape::envoy_filter_name(&r.name, i, &item.filter),
                config_type: Some(hcm::http_filter::ConfigType::ConfigDiscovery(
                    core::ExtensionConfigSource {
                        config_source: Some(ads()),
                        type_urls: vec![Wasm::type_url()],
                        ..Default::default()
                    },
                )),
                // enabled only on its own route (route configuration: typed_per_filter_config)
                disabled: true,
                ..Default::default()
            });
        }
    }
    http_filters.push(hcm::HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
            &Router::default(),
        ))),
        ..Default::default()
    });
    let manager = hcm::HttpConnectionManager {
        stat_prefix: shape::STAT_PREFIX.into(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(ads()),
                route_config_name: shape::ROUTE_CONFIG.into(),
            },
        )),
        http_filters,
        ..Default::default()
    };
    listener::Listener {
        name: shape::LISTENER.into(),
        address: Some(address(shape::socket_addr(&p.gateway.listen))),
        filter_chains: vec![listener::FilterChain {
            filters: vec![listener::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(any(&manager))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn header_matcher(name: &str, m: &HeaderMatch) -> route::HeaderMatcher {
    let pattern = match m {
        HeaderMatch::Regex(regex) => {
            matcher::string_matcher::MatchPattern::SafeRegex(matcher::RegexMatcher {
                regex: regex.clone(),
                ..Default::default()
            })
        }
        HeaderMatch::Exact(value) => matcher::string_matcher::MatchPattern::Exact(value.clone()),
    };
    route::HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
            matcher::StringMatcher {
                match_pattern: Some(pattern),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn route_configuration(p: &PolicyFile) -> route::RouteConfiguration {
    let routes = p
        .routes
        .iter()
        .map(|r| {
            // An empty `config` is Envoy's "enabled here, no per-route settings".
            let enabled = any(&route::FilterConfig {
                config: Some(Any::default()),
                ..Default::default()
            });
            let per_filter: HashMap<String, Any> = r
                .chain
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    (
                        shape::envoy_filter_name(&r.name, i, &item.filter),
                        enabled.clone(),
                    )
                })
                .collect();
            route::Route {
                name: r.name.clone(),
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix(
                        r.matcher.path_prefix().to_string(),
                    )),
                    headers: shape::header_matches(&r.matcher)
                        .iter()
                        .map(|(name, m)| header_matcher(name, m))
                        .collect(),
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                        r.upstream.clone(),
                    )),
                    ..Default::default()
                })),
                typed_per_filter_config: per_filter,
                ..Default::default()
            }
        })
        .collect();
    route::RouteConfiguration {
        name: shape::ROUTE_CONFIG.into(),
        virtual_hosts: vec![route::VirtualHost {
            name: shape::VIRTUAL_HOST.into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn filter_configs(p: &PolicyFile) -> Vec<(String, Any)> {
    let mut out = Vec::new();
    for r in &p.routes {
        for (i, item) in r.chain.iter().enumerate() {
            let name = shape::envoy_filter_name(&r.name, i, &item.filter);
            let plugin = wasm::PluginConfig {
                name: name.clone(),
                root_id: item.artifact(),
                configuration: Some(any(&StringValue {
                    value: item.config_value().to_string(),
                })),
                vm: Some(wasm::plugin_config::Vm::VmConfig(wasm::VmConfig {
                    vm_id: item.artifact(),
                    runtime: "envoy.wasm.runtime.v8".into(),
                    code: Some(core::AsyncDataSource {
                        specifier: Some(core::async_data_source::Specifier::Local(
                            core::DataSource {
                                specifier: Some(core::data_source::Specifier::Filename(
                                    shape::wasm_filename(p, item),
                                )),
                                ..Default::default()
                            },
                        )),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            };
            let config = core::TypedExtensionConfig {
                name: name.clone(),
                typed_config: Some(any(&Wasm {
                    config: Some(plugin),
                })),
            };
            out.push((name, any(&config)));
        }
    }
    out
}
