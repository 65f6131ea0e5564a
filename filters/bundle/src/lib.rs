//! `portcullis` filter: an ordered chain of Portcullis policies in one wasm filter.
//!
//! ```json
//! {"chain": [{"policy": "request-guard", "config": {...}}, {"policy": "headers", "config": {...}}]}
//! ```
//! Each `config` is exactly the config of the policy's own filter, checked by the same parser; errors are
//! pathed from the bundle root (`chain[1].config.request.set[0].name: …`). Semantics are those of the same
//! policies as separate filters: see `portcullis_common::chain`.

pub mod registry;

use portcullis_common::chain::{Chain, ChainState};
use portcullis_common::host::{CalloutResponse, RootHost};
use portcullis_common::{ConfigError, Decision, Exchange, Policy};
use std::time::Duration;

pub struct BundlePolicy {
    chain: Chain,
}

impl BundlePolicy {
    pub fn policies(&self) -> Vec<&'static str> {
        self.chain.names()
    }
}

impl Policy for BundlePolicy {
    const NAME: &'static str = portcullis_common::policy::BUNDLE;
    type State = ChainState;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        let raw: registry::BundleConfig = portcullis_common::parse_config(config)?;
        let steps = raw
            .chain
            .iter()
            .enumerate()
            .map(|(i, item)| registry::build(i, item))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BundlePolicy {
            chain: Chain::new(steps)?,
        })
    }

    fn on_request_headers(&self, state: &mut ChainState, ex: &mut Exchange) -> Decision {
        self.chain.on_request_headers(state, ex)
    }
    fn wants_request_body(&self) -> bool {
        self.chain.wants_request_body()
    }
    fn on_request_body(
        &self,
        state: &mut ChainState,
        ex: &mut Exchange,
        size: usize,
        end: bool,
    ) -> Decision {
        self.chain.on_request_body(state, ex, size, end)
    }
    fn on_response_headers(&self, state: &mut ChainState, ex: &mut Exchange) -> Decision {
        self.chain.on_response_headers(state, ex)
    }
    fn on_log(&self, state: &mut ChainState, ex: &mut Exchange) {
        self.chain.on_log(state, ex)
    }
    fn tick_period(&self) -> Option<Duration> {
        self.chain.tick_period()
    }
    fn on_start(&self, root: &mut dyn RootHost) {
        self.chain.on_start(root)
    }
    fn on_tick(&self, root: &mut dyn RootHost) {
        self.chain.on_tick(root)
    }
    fn on_callout_response(
        &self,
        root: &mut dyn RootHost,
        token: u32,
        response: Option<CalloutResponse>,
    ) {
        self.chain.on_callout_response(root, token, response)
    }
    fn on_resume(&self, state: &mut ChainState, ex: &mut Exchange, timed_out: bool) -> Decision {
        self.chain.on_resume(state, ex, timed_out)
    }
    fn max_pause(&self) -> Duration {
        self.chain.max_pause()
    }
}

portcullis_common::export_policy!(BundlePolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_common::testing::FakeHost;

    #[test]
    fn a_chain_config_builds_each_policy_with_its_own_parser() {
        let p = BundlePolicy::configure(
            br#"{"chain":[{"policy":"headers","config":{"request":{"set":[{"name":"x-a","value":"1"}]}}},
                          {"policy":"headers","config":{"request":{"set":[{"name":"x-b","value":"${header.x-a}"}]}}}]}"#,
        )
        .unwrap();
        assert_eq!(p.policies(), vec!["headers", "headers"]);
        let host = FakeHost::request("GET", "/");
        let mut ex = Exchange::new(Box::new(host.clone()));
        let mut st = ChainState::default();
        assert_eq!(p.on_request_headers(&mut st, &mut ex), Decision::Continue);
        assert_eq!(
            host.header("x-b").as_deref(),
            Some("1"),
            "the second policy sees the first one's edit"
        );
    }

    #[test]
    fn a_missing_config_means_the_policys_defaults() {
        let p = BundlePolicy::configure(br#"{"chain":[{"policy":"headers"}]}"#).unwrap();
        assert_eq!(p.policies(), vec!["headers"]);
    }

    #[test]
    fn errors_are_pathed_from_the_bundle_root() {
        let cases = [
            (
                r#"{"chain":[{"policy":"headers","config":{"request":{"set":[{"name":"x y","value":"v"}]}}}]}"#,
                r#"chain[0].config.request.set[0].name: "x y" is not a valid header name"#,
            ),
            (
                r#"{"chain":[{"policy":"nope","config":{}}]}"#,
                "chain[0].policy: unknown policy \"nope\"",
            ),
            (r#"{"chain":[]}"#, "chain: must hold at least one policy"),
            (r#"{}"#, "missing field `chain`"),
            (
                r#"{"chain":[{"policy":"headers","config":{"requestx":{}}}]}"#,
                "chain[0].config.requestx: unknown field",
            ),
            (
                r#"{"chain":[{"policy":"headers","config":{},"extra":1}]}"#,
                "chain[0].extra: unknown field",
            ),
        ];
        for (json, want) in cases {
            let err = BundlePolicy::configure(json.as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with(want), "{json}\n got:  {err}\n want: {want}");
        }
    }
}
