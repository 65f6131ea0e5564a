//! Real Kong (its Lua layer on its WebAssembly engine), taken from the environment: `PORTCULLIS_KONG` (a `kong`
//! command that runs from any directory), else `kong` on `PATH`. The project never ships or builds Kong
//! (kong/README.md says how one was built for this suite); without one, [`binary`] says why.
//!
//! Each [`Kong`] gets its own prefix and filters folder under the system temp dir (world-readable: Kong's
//! workers run unprivileged), loopback ports, and is stopped (`kong stop`) when dropped. DB-less nodes load a
//! declarative config; database nodes use a throwaway [`Postgres`].

use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The `kong` command: `PORTCULLIS_KONG`, else `kong` on `PATH`, checked with `kong version`.
pub fn binary() -> Result<PathBuf, String> {
    let (candidate, origin) = crate::paths::env_or_path("PORTCULLIS_KONG", "kong")
        .ok_or("no Kong: set PORTCULLIS_KONG or put `kong` on PATH")?;
    let out = Command::new(&candidate)
        .arg("version")
        .output()
        .map_err(|e| format!("{} ({origin}): {e}", candidate.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !version.starts_with('3') {
        return Err(format!(
            "{} ({origin}) is no Kong 3.x: `kong version` printed {version:?}",
            candidate.display()
        ));
    }
    Ok(candidate)
}

/// `kong version` of [`binary`] (e.g. `3.9.3`).
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fresh world-readable directory under the system temp dir.
pub fn scratch_dir(what: &str) -> std::io::Result<PathBuf> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "portcullis-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Copies every built filter (`dist/*.wasm` and `*.meta.json`) into `dir`, readable by Kong's workers.
pub fn install_filters(dir: &Path) -> std::io::Result<usize> {
    let dist = crate::paths::wasm("x")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut n = 0;
    for entry in std::fs::read_dir(&dist)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".wasm") || name.ends_with(".meta.json") {
            let to = dir.join(&name);
            std::fs::copy(entry.path(), &to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))?;
            n += usize::from(name.ends_with(".wasm"));
        }
    }
    Ok(n)
}

/// Where a Kong node keeps its data.
pub enum Store<'a> {
    /// DB-less, from this declarative config (JSON is YAML).
    Declarative(&'a Value),
    Postgres(&'a Postgres),
}

pub struct Kong {
    bin: PathBuf,
    dir: PathBuf,
    prefix: PathBuf,
    conf: PathBuf,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    running: bool,
    cpu: Option<usize>,
}

impl Kong {
    /// Starts Kong with every built filter in its `wasm_filters_path`, the shared-data zone as
    /// `portcullis render --target kong` declares it, and `extra` kong.conf lines.
    pub fn start(store: Store<'_>, extra: &[&str]) -> Result<Kong, String> {
        Kong::start_pinned(store, extra, None)
    }

    /// [`Kong::start`] with Kong's processes pinned to `cpu` (`taskset`; benchmarks).
    pub fn start_pinned(
        store: Store<'_>,
        extra: &[&str],
        cpu: Option<usize>,
    ) -> Result<Kong, String> {
        let bin = binary()?;
        let dir = scratch_dir("kong").map_err(|e| e.to_string())?;
        let filters = dir.join("filters");
        install_filters(&filters).map_err(|e| format!("installing the filters: {e}"))?;
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port().map_err(|e| e.to_string())?));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port().map_err(|e| e.to_string())?));
        let mut conf = vec![
            "wasm = on".to_string(),
            format!("wasm_filters_path = {}", filters.display()),
            "nginx_wasm_shm_kv_portcullis = 32m eviction=none".into(),
            format!("proxy_listen = {proxy}"),
            format!("admin_listen = {admin}"),
            "status_listen = off".into(),
            "admin_gui_listen = off".into(),
            "anonymous_reports = off".into(),
            "nginx_worker_processes = 2".into(),
            "log_level = info".into(),
        ];
        match store {
            Store::Declarative(config) => {
                let file = dir.join("kong.yml");
                std::fs::write(
                    &file,
                    serde_json::to_string_pretty(config).unwrap_or_default(),
                )
                .map_err(|e| e.to_string())?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| e.to_string())?;
                conf.push("database = off".into());
                conf.push(format!("declarative_config = {}", file.display()));
            }
            Store::Postgres(pg) => conf.extend(pg.kong_conf()),
        }
        conf.extend(extra.iter().map(|l| l.to_string()));
        let conf_file = dir.join("kong.conf");
        std::fs::write(&conf_file, conf.join("\n") + "\n").map_err(|e| e.to_string())?;
        let mut kong = Kong {
            bin,
            prefix: dir.join("prefix"),
            dir,
            conf: conf_file,
            proxy,
            admin,
            running: false,
            cpu,
        };
        if let Store::Postgres(_) = store {
            kong.run(&["migrations", "bootstrap"])?;
        }
        kong.run(&["start"])?;
        kong.running = true;
        kong.wait_ready()?;
        Ok(kong)
    }

    /// `kong <args> -c <conf> -p <prefix>` (`kong stop` takes no `-c`); Err carries its output.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = match self.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.args(args);
        if args != ["stop"] {
            cmd.arg("-c").arg(&self.conf);
        }
        cmd.arg("-p")
            .arg(&self.prefix)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        run(&mut cmd).map_err(|text| {
            format!(
                "kong {} failed: {text}\n{}",
                args.join(" "),
                tail(&self.error_log(), 30)
            )
        })
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = crate::client::Request::new(self.admin, "GET", "/status")
                .try_send()
                .is_ok_and(|r| r.status == 200);
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Kong's Admin API did not answer in 30 s:\n{}",
                    tail(&self.error_log(), 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kong's error log (nginx's and its filters' lines).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    /// Lines of the error log that say a chain is not running or a worker failed: a filter that refused its
    /// config (Kong then proxies the route without its chain), a trap, an `[emerg]`/`[alert]`/`[crit]`.
    pub fn chain_failures(&self) -> Vec<String> {
        self.error_log()
            .lines()
            .filter(|l| {
                l.contains("failed rebuilding filter chain state")
                    || l.contains("failed to configure")
                    || l.contains("[emerg]")
                    || l.contains("[alert]")
                    || l.contains("[crit]")
                    || l.contains("trap in ")
            })
            .map(str::to_string)
            .collect()
    }

    /// A request to an Admin API path, JSON in and out.
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> crate::Response {
        let mut r = crate::client::Request::new(self.admin, method, path);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string().as_bytes());
        }
        r.try_send()
            .unwrap_or_else(|e| panic!("Admin API {method} {path}: {e}"))
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ = self.run(&["stop"]);
            self.running = false;
        }
    }
}

impl Drop for Kong {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("PORTCULLIS_KEEP_KONG").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `cmd` to its end: its stdout and stderr, as `Ok` when it succeeded.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A throwaway PostgreSQL server on a loopback port (Debian's `postgresql`: `initdb`/`postgres` run as the
/// `postgres` user), stopped and deleted when dropped.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// `runuser`, whose child is the server: stopped with `pg_ctl`, as signals to runuser do not reach it.
    child: Child,
}

impl Postgres {
    pub fn start() -> Result<Postgres, String> {
        let bin = postgres_bin_dir()?;
        let dir = scratch_dir("postgres").map_err(|e| e.to_string())?;
        let data = dir.join("data");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        if !chown.is_ok_and(|s| s.success()) {
            return Err(
                "chown to the postgres user failed (the suite runs PostgreSQL as `postgres`)"
                    .into(),
            );
        }
        let as_postgres = |program: &Path| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        };
        let init = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "kong", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !init.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&init.stderr)));
        }
        let port = free_port().map_err(|e| e.to_string())?;
        let child = as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let pg = Postgres {
            dir,
            bin: bin.clone(),
            port,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("PostgreSQL did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let created = as_postgres(&bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "kong",
                "kong",
            ])
            .output()
            .map_err(|e| format!("createdb: {e}"))?;
        if !created.status.success() {
            return Err(format!(
                "createdb: {}",
                String::from_utf8_lossy(&created.stderr)
            ));
        }
        Ok(pg)
    }

    fn kong_conf(&self) -> Vec<String> {
        vec![
            "database = postgres".into(),
            "pg_host = 127.0.0.1".into(),
            format!("pg_port = {}", self.port),
            "pg_user = kong".into(),
            "pg_database = kong".into(),
        ]
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's PostgreSQL server programs (`/usr/lib/postgresql/<version>/bin`).
pub fn postgres_bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no PostgreSQL server (Debian package postgresql) installed".to_string())?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no PostgreSQL server (Debian package postgresql) installed".into())
}
