//! What the lifecycle scenarios need besides a cluster: a private copy of PostgreSQL to install
//! an old release into, the released build itself, and ways to compare what a database holds
//! (its rows, its sequences, its extension's catalog) before and after a dump, a restore or an
//! upgrade.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use postgres::Client;

use crate::run_ok;

/// The repository's root (the e2e crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The package directory of a released version built from its commit (cached outside the clone
/// by `scripts/old-release.sh`, built there the first time).
pub fn old_release(commit: &str) -> PathBuf {
    let out = run_ok({
        let mut c = Command::new(repo_root().join("scripts/old-release.sh"));
        c.arg(commit);
        c
    });
    PathBuf::from(out.lines().last().unwrap_or_default().trim())
}

const PG_LIB: &str = "usr/lib/postgresql/15/lib";
const PG_SHARE: &str = "usr/share/postgresql/15";

/// A private copy of Debian's PostgreSQL 15 (binaries and share copied, libraries linked), so a
/// test installs the extension builds of its choice without touching the system's. PostgreSQL
/// finds its library and share directories relative to its binaries. Removed on drop.
pub struct PgInstall {
    root: PathBuf,
}

impl PgInstall {
    pub fn new(name: &str) -> PgInstall {
        let base = std::env::var("EMPLOYES_SYNC_TEST_DIR")
            .unwrap_or_else(|_| "/tmp/employes_sync_e2e".into());
        let root = PathBuf::from(base).join(format!("{name}-{}-pg", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let install = PgInstall { root };
        std::fs::create_dir_all(install.lib_dir()).unwrap();
        std::fs::create_dir_all(install.root.join("usr/share/postgresql")).unwrap();
        run_ok({
            let mut c = Command::new("cp");
            c.args(["-a", "/usr/lib/postgresql/15/bin"])
                .arg(install.root.join("usr/lib/postgresql/15/"));
            c
        });
        run_ok({
            let mut c = Command::new("cp");
            c.args(["-a", "/usr/share/postgresql/15"])
                .arg(install.root.join("usr/share/postgresql/"));
            c
        });
        for entry in std::fs::read_dir(Path::new("/").join(PG_LIB)).unwrap() {
            let entry = entry.unwrap();
            std::os::unix::fs::symlink(entry.path(), install.lib_dir().join(entry.file_name()))
                .unwrap();
        }
        install.remove_extension();
        install
    }

    pub fn bin(&self) -> String {
        self.root
            .join("usr/lib/postgresql/15/bin")
            .display()
            .to_string()
    }

    fn lib_dir(&self) -> PathBuf {
        self.root.join(PG_LIB)
    }

    fn ext_dir(&self) -> PathBuf {
        self.root.join(PG_SHARE).join("extension")
    }

    /// Removes every file of employes_sync, as uninstalling its package would.
    pub fn remove_extension(&self) {
        for dir in [self.lib_dir(), self.ext_dir()] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("employes_sync")
                {
                    std::fs::remove_file(entry.path()).unwrap();
                }
            }
        }
    }

    /// Installs the files of a package directory (`cargo pgrx package` output).
    pub fn install_package(&self, package: &Path) {
        self.remove_extension();
        copy_all(&package.join(PG_LIB), &self.lib_dir(), |_| true);
        copy_all(
            &package.join(PG_SHARE).join("extension"),
            &self.ext_dir(),
            |_| true,
        );
    }

    /// Installs the build that `cargo pgrx install` put into the system's PostgreSQL, as its
    /// package would: the library, the control file, the install script of the version the
    /// control file names and every upgrade script. Returns that version.
    pub fn install_current(&self) -> String {
        let system_ext = Path::new("/").join(PG_SHARE).join("extension");
        let control = std::fs::read_to_string(system_ext.join("employes_sync.control")).unwrap();
        let version = control
            .lines()
            .find_map(|l| l.strip_prefix("default_version"))
            .map(|v| {
                v.trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches('\'')
                    .to_owned()
            })
            .expect("default_version in employes_sync.control");
        self.remove_extension();
        copy_all(&Path::new("/").join(PG_LIB), &self.lib_dir(), |name| {
            name == "employes_sync.so"
        });
        let install_script = format!("employes_sync--{version}.sql");
        copy_all(&system_ext, &self.ext_dir(), |name| {
            name == "employes_sync.control"
                || name == install_script
                || (name.starts_with("employes_sync--") && name.matches("--").count() == 2)
        });
        version
    }
}

impl Drop for PgInstall {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Copies the files of `from` whose name `keep` accepts into `to` (replacing, never writing
/// through: a running server may have the old library mapped).
fn copy_all(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep(&name) || !entry.file_type().unwrap().is_file() {
            continue;
        }
        let dest = to.join(&name);
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(entry.path(), &dest).unwrap();
    }
}

/// The tables that hold the extension's state.
pub const STATE_TABLES: [&str; 5] = [
    "employes_sync_sessions",
    "employes_sync_logs",
    "employes_raw_data",
    "employes_changes",
    "employes_timeline",
];

/// Per table: its row count and the MD5 of all its rows (as jsonb, sorted), leaving out the
/// columns named in `leave_out` (columns an upgrade added).
pub fn table_contents(
    c: &mut Client,
    leave_out: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, (i64, String)> {
    STATE_TABLES
        .iter()
        .map(|t| {
            let without = leave_out.get(*t).cloned().unwrap_or_default();
            let row = c
                .query_one(
                    &format!(
                        "SELECT count(*), md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), ''))
                           FROM (SELECT to_jsonb(t) - $1::text[] AS r FROM {t} t) x"
                    ),
                    &[&without],
                )
                .unwrap();
            (t.to_string(), (row.get(0), row.get(1)))
        })
        .collect()
}

/// Per table, its columns in order.
pub fn table_columns(c: &mut Client) -> BTreeMap<String, Vec<String>> {
    STATE_TABLES
        .iter()
        .map(|t| {
            let cols: Vec<String> = c
                .query(
                    "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass
                        AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    &[t],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            (t.to_string(), cols)
        })
        .collect()
}

/// The content hashes of every raw version, in id order, as one MD5.
pub fn content_hashes(c: &mut Client) -> String {
    c.query_one(
        "SELECT md5(coalesce(string_agg(content_hash, ',' ORDER BY id), '')) FROM employes_raw_data",
        &[],
    )
    .unwrap()
    .get(0)
}

/// The position of every sequence of the extension (`last_value`, `is_called`).
pub fn sequence_positions(c: &mut Client) -> BTreeMap<String, (i64, bool)> {
    [
        "employes_sync_logs_id_seq",
        "employes_raw_data_id_seq",
        "employes_changes_id_seq",
    ]
    .iter()
    .map(|s| {
        let row = c
            .query_one(&format!("SELECT last_value, is_called FROM {s}"), &[])
            .unwrap();
        (s.to_string(), (row.get(0), row.get(1)))
    })
    .collect()
}

/// The extension's catalog as facts that do not depend on OIDs (tests/sql/catalog_fingerprint.sql).
pub fn catalog_fingerprint(c: &mut Client) -> Vec<String> {
    let sql =
        std::fs::read_to_string(repo_root().join("tests/sql/catalog_fingerprint.sql")).unwrap();
    c.query(sql.as_str(), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
