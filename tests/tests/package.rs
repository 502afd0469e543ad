//! The Debian package, as a DBA uses it: `apt install ./postgresql-15-employes-sync_<v>_amd64.deb`
//! on a server whose extension files were never installed by cargo-pgrx, a sync, an upgrade from
//! the previous package (0.1.0) that keeps the data, and `apt remove`.
//!
//! It installs packages into the system's PostgreSQL, so it runs alone, after every other test:
//! `scripts/test.sh` runs it with `--ignored`. The files of a `cargo pgrx install` are moved
//! aside first and put back at the end.

use std::path::{Path, PathBuf};
use std::process::Command;

use employes_sync_e2e::*;

const PACKAGE: &str = "postgresql-15-employes-sync";
const LIB: &str = "/usr/lib/postgresql/15/lib";
const EXT: &str = "/usr/share/postgresql/15/extension";

fn script(args: &[&str]) -> PathBuf {
    let out = run_ok({
        let mut c = Command::new(repo_root().join("scripts/package.sh"));
        c.args(args);
        c
    });
    PathBuf::from(out.lines().last().unwrap_or_default().trim())
}

fn apt(args: &[&str]) -> String {
    run_ok({
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-y", "-q"])
            .args(args);
        c
    })
}

/// The extension's files in the system's PostgreSQL directories.
fn extension_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [LIB, EXT] {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with("employes_sync") {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

/// Moves the files of a `cargo pgrx install` aside, and back when dropped.
struct Aside {
    dir: PathBuf,
    moved: Vec<PathBuf>,
}

impl Aside {
    fn new() -> Aside {
        let dir = std::env::temp_dir().join(format!("employes_sync-aside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let moved = extension_files();
        for f in &moved {
            std::fs::rename(f, dir.join(f.file_name().unwrap())).unwrap();
        }
        Aside { dir, moved }
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        for f in &self.moved {
            let _ = std::fs::remove_file(f);
            let _ = std::fs::rename(self.dir.join(f.file_name().unwrap()), f);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn installed_version() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", PACKAGE])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("install ok installed ")
        .map(str::to_owned)
}

fn sync_any_version(c: &mut Client) -> (String, i32) {
    let id: uuid::Uuid = c
        .query_one(
            "SELECT id FROM employes_sync_trigger('manual', 'package@example.org')",
            &[],
        )
        .unwrap()
        .get(0);
    let r = c
        .query_one(
            "SELECT status, versions_written FROM employes_sync_wait($1, 600)",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

#[test]
#[ignore = "installs packages into the system's PostgreSQL: scripts/test.sh runs it alone, last"]
fn the_package_installs_syncs_upgrades_keeping_the_data_and_uninstalls_cleanly() {
    assert!(
        installed_version().is_none(),
        "{PACKAGE} is already installed"
    );
    let current = script(&[]);
    let old = script(&["--from", old_release("cf9700f").to_str().unwrap(), "0.1.0"]);
    let info = run_ok({
        let mut c = Command::new("dpkg-deb");
        c.arg("--info").arg(&current);
        c
    });
    let contents = run_ok({
        let mut c = Command::new("dpkg-deb");
        c.arg("--contents").arg(&current);
        c
    });
    eprintln!(
        "dpkg-deb --info {}:\n{info}\ndpkg-deb --contents:\n{contents}",
        current.display()
    );
    assert!(
        info.contains("Depends: postgresql-15") && info.contains("Recommends: postgresql-15-cron")
    );

    let aside = Aside::new();
    assert!(
        extension_files().is_empty(),
        "no extension files before the package"
    );

    // The previous release, as a user had it.
    apt(&["install", old.to_str().unwrap()]);
    assert_eq!(installed_version().as_deref(), Some("0.1.0"));
    let listed = run_ok({
        let mut c = Command::new("dpkg");
        c.args(["-L", PACKAGE]);
        c
    });
    for path in listed.lines().filter(|p| Path::new(p).is_file()) {
        assert!(
            path.contains("employes_sync") || path.contains("employes-sync"),
            "the package holds a file that is not its own: {path}"
        );
    }
    let cluster = Cluster::start("package", &fast_conf());
    let sim = sim(40, 8, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    assert_eq!(sync_any_version(&mut c).0, "completed");
    sim.advance();
    assert_eq!(sync_any_version(&mut c).0, "completed");
    let rows = count(&mut c, "SELECT count(*) FROM employes_raw_data");

    // The new package over it, a restart, and the update of the extension's SQL.
    apt(&["install", current.to_str().unwrap()]);
    let version = installed_version().unwrap();
    assert_ne!(version, "0.1.0");
    drop(c);
    cluster.pg_ctl_stop("fast");
    cluster.pg_ctl_start();
    let mut c = cluster.connect();
    c.batch_execute("ALTER EXTENSION employes_sync UPDATE")
        .unwrap();
    let ext: String = c
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'employes_sync'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ext, version);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_raw_data"),
        rows,
        "the data is kept"
    );
    assert_eq!(sync_any_version(&mut c), ("completed".to_owned(), 0));
    sim.advance();
    let (status, written) = sync_any_version(&mut c);
    assert!(status == "completed" && written > 0, "{status} {written}");
    assert_history_consistent(&mut c);
    drop(c);
    drop(cluster);

    // Removed: nothing of it is left.
    apt(&["remove", PACKAGE]);
    assert!(installed_version().is_none());
    assert!(extension_files().is_empty(), "{:?}", extension_files());
    drop(aside);
}
