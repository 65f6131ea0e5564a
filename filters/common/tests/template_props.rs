//! Property: a header template never emits CR, LF, NUL or any other control character, nor more than
//! `MAX_RENDERED_HEADER_BYTES`, whatever the request carries in the headers, query, path and properties it
//! reads. And a template whose own text holds a control character is refused at config time.
#![cfg(not(target_arch = "wasm32"))]

use portcullis_common::http::is_valid_header_value;
use portcullis_common::template::{Template, MAX_RENDERED_HEADER_BYTES};
use portcullis_common::testing::FakeHost;
use portcullis_common::Exchange;
use proptest::prelude::*;

const VARS: &[&str] = &[
    "${client_ip}",
    "${request_id}",
    "${method}",
    "${path}",
    "${path_and_query}",
    "${host}",
    "${route_id}",
    "${service_id}",
    "${header.x-a}",
    "${header.x-b}",
    "${query.q}",
];

/// Hostile text: mostly control characters, CR/LF, NUL, DEL, C1 controls, unicode line separators.
fn hostile() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('\r'),
            Just('\n'),
            Just('\0'),
            Just('\u{7f}'),
            Just('\u{85}'),
            Just('\u{2028}'),
            Just(' '),
            Just('\t'),
            any::<char>(),
            "[a-z]".prop_map(|s| s.chars().next().unwrap_or('a')),
        ],
        0..64,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn template() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(VARS).prop_map(str::to_owned),
            "[a-z =;/-]{0,8}"
        ],
        1..6,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rendered_header_values_never_hold_control_characters(
        source in template(),
        a in hostile(),
        b in hostile(),
        q in hostile(),
        path in hostile(),
        route in hostile(),
        repeat in 1usize..2000,
    ) {
        let t = Template::parse_header_value(&source).expect("generated templates are valid");
        let host = FakeHost::request(&format!("G\r\nET{a}"), &format!("/{path}?q={q}"))
            .with_header("x-a", &a)
            .with_header("x-b", &b.repeat(repeat))
            .with_header("x-request-id", &b)
            .with_property(&["xds", "route_name"], route.as_bytes())
            .with_property(&["xds", "cluster_name"], route.as_bytes());
        let mut ex = Exchange::new(Box::new(host));
        let r = t.render_header_value(&mut ex);
        prop_assert!(is_valid_header_value(&r.value), "{source:?} rendered {:?}", r.value);
        prop_assert!(!r.value.contains(['\r', '\n', '\0']));
        prop_assert!(r.value.len() <= MAX_RENDERED_HEADER_BYTES, "{} bytes", r.value.len());
    }

    #[test]
    fn a_template_text_with_a_control_character_is_refused(
        before in "[a-z ${}.]{0,12}",
        control in prop_oneof![Just('\r'), Just('\n'), Just('\0'), Just('\u{1}'), Just('\u{7f}')],
        after in "[a-z ]{0,12}",
    ) {
        let text = format!("{before}{control}{after}");
        prop_assert!(Template::parse_header_value(&text).is_err(), "{text:?} accepted");
    }
}
