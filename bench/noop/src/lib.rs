//! An HTTP filter that does nothing: `scripts/bench` measures every Portcullis filter against it to separate
//! the cost of the wasm hop from the cost of the policy. It uses the plain SDK, not the Portcullis adapter.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::ContextType;

    struct NoopRoot;
    struct NoopHttp;

    impl Context for NoopRoot {}
    impl RootContext for NoopRoot {
        fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(NoopHttp))
        }
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }
    impl Context for NoopHttp {}
    impl HttpContext for NoopHttp {}

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
    }}
}
