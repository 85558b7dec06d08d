//! Every config under `tests/config/valid/` and the shipped examples under `deploy/` load; every
//! config under `tests/config/invalid/` is refused with an error that names a field.

use std::path::{Path, PathBuf};

use dataplane::config::{HubConfig, Snapshot};

fn load(path: &Path) -> Result<Snapshot, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let raw: HubConfig = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
    Snapshot::from_config(&raw).map_err(|e| e.to_string())
}

fn files(dir: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn valid_configs_load() {
    let mut all = files("tests/config/valid");
    all.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/container/hub.yaml"));
    assert!(all.len() >= 4);
    for p in all {
        if let Err(e) = load(&p) {
            panic!("{} should load: {e}", p.display());
        }
    }
}

#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let all = files("tests/config/invalid");
    assert!(all.len() >= 5);
    for p in all {
        match load(&p) {
            Ok(_) => panic!("{} should be refused", p.display()),
            Err(e) => assert!(
                e.contains("upstream") || e.contains("limits") || e.contains("field"),
                "{}: error does not name a field: {e}",
                p.display()
            ),
        }
    }
}

#[test]
fn full_example_normalises() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/config/valid/full.yaml");
    let s = load(&p).expect("loads");
    assert_eq!(s.workers, 2);
    assert_eq!(s.separator.as_deref(), Some("."));
    assert_eq!(s.limits.head_timeout, std::time::Duration::from_secs(5));
    assert_eq!(
        s.upstreams[0].request_timeout,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(s.upstreams[1].replicas[0].path.as_ref(), "/");
    assert_eq!(s.session_ttl, std::time::Duration::from_secs(3600));
}

#[test]
fn unprefixed_name_collision_refuses_to_start_naming_both() {
    use loadtest::mock::{MockConfig, MockServer};
    // Two upstreams that both expose tool_0 … tool_9.
    let a = MockServer::start(MockConfig::default()).expect("mock a");
    let b = MockServer::start(MockConfig::default()).expect("mock b");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["--listen", "127.0.0.1:0", "--separator", "none"])
        .args(["--upstream", &format!("alpha={}", a.url())])
        .args(["--upstream", &format!("beta={}", b.url())])
        .output()
        .expect("run meshgate");
    assert!(!out.status.success(), "hub started despite a collision");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("collision")
            && err.contains("'alpha'")
            && err.contains("'beta'")
            && err.contains("tool_0"),
        "{err}"
    );
}
