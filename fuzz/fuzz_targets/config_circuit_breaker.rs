//! `portcullis_circuit_breaker::CircuitBreakerPolicy::configure` on arbitrary bytes: never panics; errors are printable.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis_fuzz::configure_any::<portcullis_circuit_breaker::CircuitBreakerPolicy>(data);
});
