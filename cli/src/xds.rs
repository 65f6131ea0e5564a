//! `portcullis serve --xds ADDR FILE`: an xDS server for Envoy that follows edits of the policy file.
//!
//! Protocol: ADS — Envoy's aggregated discovery service over one gRPC stream (`envoy-types` protos,
//! `tonic`), state-of-the-world variant. Served: the listener (LDS), its routes (RDS), the clusters (CDS) and
//! every chain filter's wasm config as its own extension config (ECDS), so editing one filter's config
//! updates that filter only. The bootstrap that points Envoy here comes from `render --target envoy --xds`.
//!
//! The file is polled; every change is loaded and validated like `portcullis validate`. A valid edit
//! becomes the next version and is pushed at once to every connected Envoy (only the resource types that
//! changed); an invalid one is reported and ignored, and the last good version keeps being served. An update
//! Envoy refuses (NACK) is reported too, and Envoy keeps its previous config.

mod resources;

use crate::policy::{LoadError, Loaded};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
pub use resources::{CLUSTER_TYPE, FILTER_CONFIG_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// What the server reports while it runs: printed as lines for humans or as JSON lines (`--output json`).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A valid edit became `version`; `changed` names the resource types whose content changed.
    Applied {
        version: u64,
        file: String,
        changed: Vec<&'static str>,
    },
    /// An edit was invalid (or unreadable); the last good version keeps serving.
    Rejected { problems: Vec<String> },
    /// Envoy refused an update (NACK) and keeps its previous config.
    Refused {
        resources: &'static str,
        version: String,
        message: String,
    },
}

impl Event {
    pub fn human(&self) -> String {
        match self {
            Event::Applied {
                version,
                file,
                changed,
            } => format!(
                "version {version}: {file} applied (changed: {})",
                if changed.is_empty() {
                    "nothing".to_string()
                } else {
                    changed.join(", ")
                }
            ),
            Event::Rejected { problems } => {
                let mut lines: Vec<String> =
                    problems.iter().map(|p| format!("rejected: {p}")).collect();
                lines.push("rejected: still serving the last good version".into());
                lines.join("\n")
            }
            Event::Refused {
                resources,
                version,
                message,
            } => format!(
                "Envoy refused {resources} version {version}: {message} (it keeps its previous config)"
            ),
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Event::Applied {
                version,
                file,
                changed,
            } => {
                json!({ "event": "applied", "version": version, "file": file, "changed": changed })
            }
            Event::Rejected { problems } => json!({ "event": "rejected", "problems": problems }),
            Event::Refused {
                resources,
                version,
                message,
            } => {
                json!({ "event": "refused_by_envoy", "resources": resources, "version": version, "message": message })
            }
        }
    }
}

/// Name of the bootstrap cluster that reaches this server.
pub const XDS_CLUSTER: &str = "portcullis_xds";
/// Envoys connected at once (one Envoy holds one stream).
const MAX_STREAMS: usize = 64;

/// The resources of one type and the snapshot version at which they last changed.
pub type Versioned = (u64, Vec<(String, Any)>);

/// One version of everything served. Each type keeps the version at which its resources last changed, so
/// an edit of one filter's config re-sends only the filter configs.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: u64,
    pub types: BTreeMap<&'static str, Versioned>,
}

impl Snapshot {
    pub fn from_policy(version: u64, l: &Loaded) -> Snapshot {
        Snapshot::default().next(version, l)
    }

    /// The snapshot after `self` for a new policy: types whose resources did not change keep their version.
    pub fn next(&self, version: u64, l: &Loaded) -> Snapshot {
        let types = resources::resources(&l.policy)
            .into_iter()
            .map(|(type_url, items)| {
                let type_version = match self.types.get(type_url) {
                    Some((v, old)) if resources::same(type_url, old, &items) => *v,
                    _ => version,
                };
                (type_url, (type_version, items))
            })
            .collect();
        Snapshot { version, types }
    }

    fn type_version(&self, type_url: &str) -> Option<u64> {
        self.types.get(type_url).map(|(v, _)| *v)
    }

    /// The response for `type_url` limited to `names` (all when empty, as for Envoy's wildcard LDS/CDS).
    fn response(&self, type_url: &str, names: &[String], nonce: u64) -> Option<DiscoveryResponse> {
        let (version, items) = self.types.get(type_url)?;
        Some(DiscoveryResponse {
            version_info: version.to_string(),
            type_url: type_url.to_string(),
            nonce: nonce.to_string(),
            resources: items
                .iter()
                .filter(|(name, _)| names.is_empty() || names.contains(name))
                .map(|(_, a)| a.clone())
                .collect(),
            ..Default::default()
        })
    }
}

/// The bootstrap that makes Envoy take everything from the ADS server at `xds`: only the admin address,
/// the server's cluster (HTTP/2 for gRPC) and `dynamic_resources`.
pub fn bootstrap(l: &Loaded, xds: std::net::SocketAddr) -> Value {
    let admin = crate::shape::socket_addr(&l.policy.gateway.admin);
    let over_ads = json!({ "ads": {}, "resource_api_version": "V3" });
    let mut bootstrap = json!({
        "node": { "id": "portcullis", "cluster": "portcullis" },
        "admin": { "address": { "socket_address": { "address": admin.ip().to_string(), "port_value": admin.port() } } },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }],
                "set_node_on_first_message_only": true
            },
            "lds_config": over_ads,
            "cds_config": over_ads
        },
        "static_resources": { "clusters": [{
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": { "http2_protocol_options": {} }
                }
            },
            "load_assignment": {
                "cluster_name": XDS_CLUSTER,
                "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                    "socket_address": { "address": xds.ip().to_string(), "port_value": xds.port() }
                }}}]}]
            }
        }]}
    });
    // Stats tags are bootstrap-only (not served over xDS).
    if let Some(stats_config) = crate::render::envoy_stats_config(&l.policy) {
        bootstrap["stats_config"] = stats_config;
    }
    bootstrap
}

/// Runs the server until the process ends. `log` receives every event (update, rejection, NACK).
pub fn serve(
    listener: TcpListener,
    file: PathBuf,
    first: Loaded,
    poll: Duration,
    env: fn(&str) -> Option<String>,
    log: fn(&Event),
) -> std::io::Result<()> {
    let (publish, snapshots) = watch::channel(Arc::new(Snapshot::from_policy(1, &first)));
    std::thread::spawn(move || watch_file(&file, &publish, poll, env, log));
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let incoming = TcpListenerStream::new(tokio::net::TcpListener::from_std(listener)?);
        let service = Ads {
            snapshots,
            log,
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        };
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(service))
            .serve_with_incoming(incoming)
            .await
            .map_err(std::io::Error::other)
    })
}

fn stamp(path: &Path) -> Option<(SystemTime, u64, Vec<u8>)> {
    let meta = std::fs::metadata(path).ok()?;
    // Content too: two writes within the mtime granularity must still count as a change.
    let content = std::fs::read(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), content))
}

fn watch_file(
    file: &Path,
    publish: &watch::Sender<Arc<Snapshot>>,
    poll: Duration,
    env: fn(&str) -> Option<String>,
    log: fn(&Event),
) {
    // No initial stamp: the file may have changed between the first load and now, so the first poll
    // compares what it reads with what is served (an unchanged file gives no new version).
    let mut last = None;
    loop {
        std::thread::sleep(poll);
        let now = stamp(file);
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        match crate::load_and_validate(file, &env) {
            Ok(loaded) => {
                let current = publish.borrow().clone();
                let next = current.next(current.version + 1, &loaded);
                let changed: Vec<&str> = next
                    .types
                    .iter()
                    .filter(|(t, (v, _))| current.type_version(t) != Some(*v))
                    .map(|(t, _)| short_type(t))
                    .collect();
                if changed.is_empty() {
                    continue; // same resources (a comment, a touch): nothing to push
                }
                let version = next.version;
                publish.send_replace(Arc::new(next));
                log(&Event::Applied {
                    version,
                    file: file.display().to_string(),
                    changed,
                });
            }
            Err(LoadError::Io(e)) => log(&Event::Rejected { problems: vec![e] }),
            Err(LoadError::Invalid(errors)) => log(&Event::Rejected {
                problems: errors.iter().map(ToString::to_string).collect(),
            }),
        }
    }
}

fn short_type(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER_TYPE => "clusters",
        LISTENER_TYPE => "listener",
        ROUTE_TYPE => "routes",
        FILTER_CONFIG_TYPE => "filter configs",
        _ => "other",
    }
}

struct Ads {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    log: fn(&Event),
    streams: Arc<tokio::sync::Semaphore>,
}

/// What one Envoy asked for, per type.
#[derive(Default)]
struct Subscription {
    names: Vec<String>,
    /// The type version last sent on this stream.
    sent: Option<u64>,
}

type ResponseStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("too many xDS streams"))?;
        let mut inbound = request.into_inner();
        let mut snapshots = self.snapshots.clone();
        let log = self.log;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let _permit = permit;
            let mut subscriptions: BTreeMap<String, Subscription> = BTreeMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    message = inbound.message() => {
                        let Ok(Some(r)) = message else { break };
                        let snapshot = snapshots.borrow().clone();
                        if let Some(response) = answer(&r, &snapshot, &mut subscriptions, &mut nonce, log) {
                            if tx.send(Ok(response)).await.is_err() {
                                break;
                            }
                        }
                    }
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let snapshot = snapshots.borrow_and_update().clone();
                        for response in updates(&snapshot, &mut subscriptions, &mut nonce) {
                            if tx.send(Ok(response)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "portcullis serves state-of-the-world ADS only (api_type: GRPC, not DELTA_GRPC)",
        ))
    }
}

/// Handles one request from Envoy: a first subscription or a change of names gets the current resources;
/// an ACK of what was sent needs nothing; a NACK is reported (Envoy keeps its previous config).
fn answer(
    r: &DiscoveryRequest,
    snapshot: &Snapshot,
    subscriptions: &mut BTreeMap<String, Subscription>,
    nonce: &mut u64,
    log: fn(&Event),
) -> Option<DiscoveryResponse> {
    let current = snapshot.type_version(&r.type_url)?;
    let sub = subscriptions.entry(r.type_url.clone()).or_default();
    if let Some(error) = &r.error_detail {
        log(&Event::Refused {
            resources: short_type(&r.type_url),
            version: sub.sent.map_or("-".into(), |v| v.to_string()),
            message: error.message.clone(),
        });
        return None;
    }
    let names_changed = sub.names != r.resource_names;
    if !names_changed && sub.sent == Some(current) {
        return None; // an ACK of what we sent
    }
    sub.names = r.resource_names.clone();
    sub.sent = Some(current);
    *nonce += 1;
    snapshot.response(&r.type_url, &sub.names, *nonce)
}

/// The responses a new snapshot needs on one stream: every subscribed type whose version moved.
fn updates(
    snapshot: &Snapshot,
    subscriptions: &mut BTreeMap<String, Subscription>,
    nonce: &mut u64,
) -> Vec<DiscoveryResponse> {
    let mut out = Vec::new();
    for type_url in resources::TYPES {
        let (Some(sub), Some(current)) = (
            subscriptions.get_mut(type_url),
            snapshot.type_version(type_url),
        ) else {
            continue;
        };
        if sub.sent == Some(current) {
            continue;
        }
        sub.sent = Some(current);
        *nonce += 1;
        out.extend(snapshot.response(type_url, &sub.names, *nonce));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    fn loaded(limit: u32) -> Loaded {
        let text = format!(
            "
upstreams:
  echo: {{ url: 'http://127.0.0.1:18080' }}
routes:
  - name: api
    upstream: echo
    chain:
      - filter: rate-limit
        config: {{ limits: [ {{ name: all, key: all, rate: {limit}, per: 1s }} ] }}
      - filter: headers
        config: {{ response: {{ set: [ {{ name: x-a, value: '1' }} ] }} }}
"
        );
        crate::policy::load_str("test.yaml", &text, &|_| None).expect("valid policy")
    }

    fn request(type_url: &str, version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn quiet(_: &Event) {}

    #[test]
    fn a_subscription_is_answered_once_and_its_ack_needs_nothing() {
        let snapshot = Snapshot::from_policy(1, &loaded(5));
        let mut subs = BTreeMap::new();
        let mut nonce = 0;
        let first = answer(
            &request(CLUSTER_TYPE, "", ""),
            &snapshot,
            &mut subs,
            &mut nonce,
            quiet,
        )
        .expect("the current clusters");
        assert_eq!(
            (first.version_info.as_str(), first.resources.len()),
            ("1", 1)
        );
        let ack = request(CLUSTER_TYPE, "1", &first.nonce);
        assert!(answer(&ack, &snapshot, &mut subs, &mut nonce, quiet).is_none());
        let mut ecds = request(FILTER_CONFIG_TYPE, "", "");
        ecds.resource_names = vec!["portcullis.api.0.rate-limit".into()];
        let filters =
            answer(&ecds, &snapshot, &mut subs, &mut nonce, quiet).expect("named configs");
        assert_eq!(filters.resources.len(), 1, "only the named filter config");
    }

    #[test]
    fn an_edit_re_sends_only_the_types_that_changed_and_a_nack_is_not_retried() {
        let v1 = Snapshot::from_policy(1, &loaded(5));
        let mut subs = BTreeMap::new();
        let mut nonce = 0;
        for t in resources::TYPES {
            assert!(answer(&request(t, "", ""), &v1, &mut subs, &mut nonce, quiet).is_some());
        }
        let v2 = v1.next(2, &loaded(50));
        let sent = updates(&v2, &mut subs, &mut nonce);
        let types: Vec<&str> = sent.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(
            types,
            vec![FILTER_CONFIG_TYPE],
            "a new limit is a filter config change"
        );
        assert_eq!(sent[0].version_info, "2");
        let mut nack = request(FILTER_CONFIG_TYPE, "1", &sent[0].nonce);
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad config".into(),
            ..Default::default()
        });
        assert!(answer(&nack, &v2, &mut subs, &mut nonce, quiet).is_none());
        assert!(
            updates(&v2, &mut subs, &mut nonce).is_empty(),
            "nothing new to send"
        );
        let same = v2.next(3, &loaded(50));
        assert!(
            updates(&same, &mut subs, &mut nonce).is_empty(),
            "an identical file changes nothing"
        );
    }
}
