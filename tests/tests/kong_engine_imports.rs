//! Every built filter (`dist/*.wasm`, or `$PORTCULLIS_DIST`) must import only host functions that Kong's
//! WebAssembly engine links, with the exact signature it declares, and none it leaves unimplemented; so a
//! module Kong would refuse to load (e.g. `incompatible import type for env::proxy_get_log_level`) fails
//! here, without Kong or the engine installed. The engine is ngx_wasm_module at commit
//! a376e67ce02c916304cc9b9ef25a540865ee6740 (the one Kong 3.10 pins); the tables below are copied from it.

use portcullis_e2e::paths;
use wasmparser::{CompositeInnerType, Parser, Payload, TypeRef, ValType, ValType::*};

#[derive(Clone, Copy, PartialEq)]
enum State {
    Impl,
    /// Points to `ngx_proxy_wasm_hfuncs_nop` (`/* NYI */`): links, but every call returns "not implemented".
    Nyi,
}
use State::*;

/// (name, params, results, state) of one host function the engine links; params and results are the
/// upstream `ngx_wavm_arity_*` vectors (`ngx_wavm_arity_i32x3` = `&[I32; 3]`, NULL = `&[]`).
type HostFn = (&'static str, &'static [ValType], &'static [ValType], State);

/// Module `env`: `ngx_proxy_wasm_hfuncs[]` in src/common/proxy_wasm/ngx_proxy_wasm_host.c of
/// ngx_wasm_module at a376e67ce02c916304cc9b9ef25a540865ee6740. Note proxy_get_log_level: the engine
/// declares two i32 params where the proxy-wasm ABI and the Rust SDK pass one. The entries that are
/// `ngx_proxy_wasm_hfuncs_no_http` without NGX_WASM_HTTP are implemented: Kong builds the engine with HTTP.
#[rustfmt::skip] // two entries a line, in upstream order
const ENV: &[HostFn] = &[
    ("proxy_log", &[I32; 3], &[I32], Impl),                        ("proxy_get_log_level", &[I32; 2], &[I32], Nyi),
    ("proxy_get_current_time_nanoseconds", &[I32], &[I32], Impl),  ("proxy_set_effective_context", &[I32], &[I32], Impl),
    ("proxy_context_finalize", &[], &[I32], Nyi),                  ("proxy_done", &[], &[I32], Nyi),
    ("proxy_create_timer", &[I32; 3], &[I32], Nyi),                ("proxy_delete_timer", &[I32], &[I32], Nyi),
    ("proxy_set_tick_period_milliseconds", &[I32], &[I32], Impl),  ("proxy_get_buffer", &[I32; 5], &[I32], Impl),
    ("proxy_get_buffer_bytes", &[I32; 5], &[I32], Impl),           ("proxy_set_buffer", &[I32; 5], &[I32], Impl),
    ("proxy_set_buffer_bytes", &[I32; 5], &[I32], Impl),           ("proxy_get_map_values", &[I32; 5], &[I32], Nyi),
    ("proxy_get_header_map_pairs", &[I32; 3], &[I32], Impl),       ("proxy_get_header_map_value", &[I32; 5], &[I32], Impl),
    ("proxy_set_map_values", &[I32; 5], &[I32], Nyi),              ("proxy_set_header_map_pairs", &[I32; 3], &[I32], Impl),
    ("proxy_add_header_map_value", &[I32; 5], &[I32], Impl),       ("proxy_replace_header_map_value", &[I32; 5], &[I32], Impl),
    ("proxy_remove_header_map_value", &[I32; 3], &[I32], Impl),    ("proxy_get_property", &[I32; 4], &[I32], Impl),
    ("proxy_set_property", &[I32; 4], &[I32], Impl),               ("proxy_resume_stream", &[I32], &[I32], Nyi),
    ("proxy_resume_downstream", &[I32], &[I32], Nyi),              ("proxy_resume_upstream", &[I32], &[I32], Nyi),
    ("proxy_continue_stream", &[I32], &[I32], Impl),               ("proxy_close_stream", &[I32], &[I32], Nyi),
    ("proxy_resume_http_stream", &[I32], &[I32], Nyi),             ("proxy_continue_request", &[], &[I32], Impl),
    ("proxy_continue_response", &[], &[I32], Nyi),                 ("proxy_send_http_response", &[I32; 8], &[I32], Impl),
    ("proxy_send_local_response", &[I32; 8], &[I32], Impl),        ("proxy_dispatch_http_call", &[I32; 10], &[I32], Impl),
    ("proxy_http_call", &[I32; 10], &[I32], Impl),                 ("proxy_dispatch_grpc_call", &[I32; 12], &[I32], Nyi),
    ("proxy_grpc_call", &[I32; 12], &[I32], Nyi),                  ("proxy_open_grpc_stream", &[I32; 9], &[I32], Nyi),
    ("proxy_grpc_stream", &[I32; 9], &[I32], Nyi),                 ("proxy_send_grpc_stream_message", &[I32; 3], &[I32], Nyi),
    ("proxy_grpc_send", &[I32; 4], &[I32], Nyi),                   ("proxy_cancel_grpc_call", &[I32], &[I32], Nyi),
    ("proxy_grpc_cancel", &[I32], &[I32], Nyi),                    ("proxy_close_grpc_call", &[I32], &[I32], Nyi),
    ("proxy_grpc_close", &[I32], &[I32], Nyi),                     ("proxy_get_status", &[I32; 3], &[I32], Nyi),
    ("proxy_open_shared_kvstore", &[I32; 4], &[I32], Nyi),         ("proxy_get_shared_kvstore_key_values", &[I32; 6], &[I32], Nyi),
    ("proxy_get_shared_data", &[I32; 5], &[I32], Impl),            ("proxy_set_shared_kvstore_key_values", &[I32; 6], &[I32], Nyi),
    ("proxy_set_shared_data", &[I32; 5], &[I32], Impl),            ("proxy_add_shared_kvstore_key_values", &[I32; 6], &[I32], Nyi),
    ("proxy_remove_shared_kvstore_key", &[I32; 6], &[I32], Nyi),   ("proxy_delete_shared_kvstore", &[I32; 6], &[I32], Nyi),
    ("proxy_open_shared_queue", &[I32; 4], &[I32], Nyi),           ("proxy_register_shared_queue", &[I32; 3], &[I32], Impl),
    ("proxy_dequeue_shared_queue_item", &[I32; 3], &[I32], Nyi),   ("proxy_dequeue_shared_queue", &[I32; 3], &[I32], Impl),
    ("proxy_enqueue_shared_queue_item", &[I32; 3], &[I32], Nyi),   ("proxy_enqueue_shared_queue", &[I32; 3], &[I32], Impl),
    ("proxy_delete_shared_queue", &[I32; 4], &[I32], Nyi),         ("proxy_resolve_shared_queue", &[I32; 5], &[I32], Nyi),
    ("proxy_create_metric", &[I32; 4], &[I32], Nyi),               ("proxy_define_metric", &[I32; 4], &[I32], Impl),
    ("proxy_get_metric_value", &[I32; 2], &[I32], Nyi),            ("proxy_get_metric", &[I32; 2], &[I32], Impl),
    ("proxy_set_metric_value", &[I32, I64], &[I32], Nyi),          ("proxy_record_metric", &[I32, I64], &[I32], Impl),
    ("proxy_increment_metric_value", &[I32, I64], &[I32], Nyi),    ("proxy_increment_metric", &[I32, I64], &[I32], Impl),
    ("proxy_delete_metric", &[I32], &[I32], Nyi),                  ("proxy_call_custom_function", &[I32; 5], &[I32], Nyi),
    ("proxy_call_foreign_function", &[I32; 6], &[I32], Impl),      ("proxy_get_configuration", &[I32; 2], &[I32], Impl),
    ("proxy_clear_route_cache", &[], &[I32], Nyi),
];

/// Module `wasi_snapshot_preview1`: `ngx_wasi_hfuncs[]` in src/wasm/wasi/ngx_wasi_preview1_host.c of
/// ngx_wasm_module at a376e67ce02c916304cc9b9ef25a540865ee6740. The V8 and Wasmer runtimes link only these
/// (anything else: "NYI - unhandled WASI function"); Wasmtime adds its own WASI underneath, but a filter must
/// load on all three. None is a stub: the fd_* and path_open answers (EBADF, ENOTSUP, ENOTDIR) are the WASI
/// answers of a sandbox with no files, and proc_exit is a deliberate no-op.
#[rustfmt::skip] // two entries a line, in upstream order
const WASI: &[HostFn] = &[
    ("args_get", &[I32; 2], &[I32], Impl),                                        ("args_sizes_get", &[I32; 2], &[I32], Impl),
    ("clock_time_get", &[I32, I64, I32], &[I32], Impl),                           ("environ_get", &[I32; 2], &[I32], Impl),
    ("environ_sizes_get", &[I32; 2], &[I32], Impl),                               ("fd_close", &[I32], &[I32], Impl),
    ("fd_fdstat_get", &[I32; 2], &[I32], Impl),                                   ("fd_prestat_get", &[I32; 2], &[I32], Impl),
    ("fd_prestat_dir_name", &[I32; 3], &[I32], Impl),                             ("fd_read", &[I32; 4], &[I32], Impl),
    ("fd_seek", &[I32, I64, I32, I32], &[I32], Impl),                             ("fd_write", &[I32; 4], &[I32], Impl),
    ("path_open", &[I32, I32, I32, I32, I32, I64, I64, I32, I32], &[I32], Impl),  ("proc_exit", &[I32], &[], Impl),
    ("random_get", &[I32; 2], &[I32], Impl),
];

/// NYI `env` imports tolerated because no Portcullis code reaches them, on any proxy: the proxy-wasm 0.2.5
/// SDK's dispatcher holds `Box<dyn RootContext>`/`Box<dyn HttpContext>`, so every default method of its
/// context traits stays in a vtable and keeps its hostcall imported, though filters/ never calls one. They
/// link (names and signatures match), so Kong loads the module. An entry no module imports fails the test.
const UNCALLED_SDK_NYI: &[&str] = &[
    "proxy_done",                 // Context::done
    "proxy_close_stream",         // HttpContext::reset_http_*, StreamContext::close_*stream
    "proxy_get_status",           // Context::get_grpc_status
    "proxy_grpc_call",            // Context::dispatch_grpc_call
    "proxy_grpc_stream",          // Context::open_grpc_stream
    "proxy_grpc_send",            // Context::send_grpc_stream_message
    "proxy_grpc_cancel",          // Context::cancel_grpc_call, cancel_grpc_stream
    "proxy_grpc_close",           // Context::close_grpc_stream
    "proxy_resolve_shared_queue", // Context::resolve_shared_queue
];

fn signature(params: &[ValType], results: &[ValType]) -> String {
    let list = |v: &[ValType]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let (params, results) = (list(params).join(", "), list(results).join(", "));
    format!("({params}) -> ({results})")
}

/// Each import of a module: (module, name, its signature, or None if it is not a function).
fn imports(bytes: &[u8]) -> wasmparser::Result<Vec<(String, String, Option<String>)>> {
    let (mut types, mut found) = (Vec::new(), Vec::new()); // types: Some(signature) for function types
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::TypeSection(section) => {
                for group in section {
                    types.extend(group?.into_types().map(|t| match t.composite_type.inner {
                        CompositeInnerType::Func(f) => Some(signature(f.params(), f.results())),
                        _ => None,
                    }));
                }
            }
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import?;
                    let sig = match import.ty {
                        TypeRef::Func(i) => types.get(i as usize).cloned().flatten(),
                        _ => None,
                    };
                    found.push((import.module.to_owned(), import.name.to_owned(), sig));
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Every import of `bytes` that the engine cannot link or does not implement, one message each.
fn unlinkable_imports(bytes: &[u8]) -> Vec<String> {
    let imports = match imports(bytes) {
        Ok(imports) => imports,
        Err(e) => return vec![format!("not a parsable wasm module: {e}")],
    };
    let mut problems = Vec::new();
    for (module, name, sig) in imports {
        let what = format!("import {module}::{name}");
        let table = match module.as_str() {
            "env" => ENV,
            "wasi_snapshot_preview1" => WASI,
            _ => &[],
        };
        let Some(&(_, params, results, state)) = table.iter().find(|f| f.0 == name) else {
            problems.push(format!("{what}: the engine declares no such host function"));
            continue;
        };
        let declared = signature(params, results);
        let sig = sig.unwrap_or_else(|| "not a function".into());
        if sig != declared {
            problems.push(format!(
                "{what} is {sig} but the engine declares {declared} (Kong: incompatible import type)"
            ));
        }
        if state == Nyi && !UNCALLED_SDK_NYI.contains(&name.as_str()) {
            problems.push(format!(
                "{what}: the engine declares {declared} but does not implement it (NYI)"
            ));
        }
    }
    problems
}

#[test]
fn every_built_filter_imports_only_what_kongs_engine_links() {
    let any = paths::wasm("any"); // honours PORTCULLIS_DIST
    let dist = any.parent().expect("dist folder");
    let entries = std::fs::read_dir(dist).into_iter().flatten().flatten();
    let mut files: Vec<_> = entries
        .map(|e| e.path())
        .filter(|p| p.extension() == Some("wasm".as_ref()))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .wasm files in {}: run scripts/build first (or set PORTCULLIS_DIST)",
        dist.display()
    );
    let (mut problems, mut used) = (Vec::new(), std::collections::BTreeSet::new());
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        for problem in unlinkable_imports(&bytes) {
            problems.push(format!("{}: {problem}", file.display()));
        }
        for (module, name, _) in imports(&bytes).unwrap_or_default() {
            used.insert(format!("{module}::{name}"));
        }
    }
    println!("{} modules import {used:?}", files.len()); // shown with --nocapture
    for name in UNCALLED_SDK_NYI {
        if !used.contains(&format!("env::{name}")) {
            problems.push(format!("{name} is in UNCALLED_SDK_NYI but never imported"));
        }
    }
    let problems = problems.join("\n");
    assert!(problems.is_empty(), "Kong incompatibilities:\n{problems}");
}

/// A module whose only section after the header is an import of `module::name` with the given signature.
fn module_importing(module: &str, name: &str, params: &[u8], results: &[u8]) -> Vec<u8> {
    let mut types = vec![1, 0x60, params.len() as u8];
    types.extend(params);
    types.push(results.len() as u8);
    types.extend(results);
    let mut imports = vec![1, module.len() as u8];
    imports.extend(module.as_bytes());
    imports.push(name.len() as u8);
    imports.extend(name.as_bytes());
    imports.extend([0x00, 0]); // a function, of type 0
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    for (id, body) in [(1u8, types), (2, imports)] {
        wasm.extend([id, body.len() as u8]);
        wasm.extend(body);
    }
    wasm
}

#[test]
fn checker_reports_the_sdk_proxy_get_log_level_import_and_passes_proxy_log() {
    const WASM_I32: u8 = 0x7f;
    let sdk = module_importing("env", "proxy_get_log_level", &[WASM_I32], &[WASM_I32]);
    let declared = "the engine declares (i32, i32) -> (i32)";
    let expected = [
        format!("import env::proxy_get_log_level is (i32) -> (i32) but {declared} (Kong: incompatible import type)"),
        format!("import env::proxy_get_log_level: {declared} but does not implement it (NYI)"),
    ];
    assert_eq!(unlinkable_imports(&sdk), expected);
    let fine = module_importing("env", "proxy_log", &[WASM_I32; 3], &[WASM_I32]);
    assert_eq!(unlinkable_imports(&fine), Vec::<String>::new());
    let unknown = module_importing("env", "proxy_no_such_call", &[], &[WASM_I32]);
    assert!(unlinkable_imports(&unknown)[0].contains("no such host function"));
}
