//! `portcullis_access_log::AccessLogPolicy::configure` on arbitrary bytes: never panics; errors are printable.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis_fuzz::configure_any::<portcullis_access_log::AccessLogPolicy>(data);
});
