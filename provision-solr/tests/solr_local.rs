//! The layer's configset and core tool against a real Solr 9 on this machine: the
//! distribution is the Maven-assembled test archive, installed by the layer's own archive
//! script from a local HTTP server, started with the layer's environment file. Checks that
//! the configset loads, that documents in collective.solr's format are indexed and found
//! (folding, wildcards, atomic updates), that a changed configset goes live by reload, and
//! that a rebuild + swap keeps the core answering with the new index.
//!
//! Skips with one line without Maven or a JDK (or when Maven cannot reach its repository),
//! except under PROVISION_SANDBOX=required, where it fails.

#[path = "common/dist.rs"]
mod dist;

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::template::Templates;
use provision_solr::{SolrArchive, SolrSettings, server};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh(script: &str) -> (bool, String) {
    let output = Command::new("sh")
        .args(["-ec", script])
        .stdin(Stdio::null())
        .output()
        .expect("sh runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn found(address: &str, core: &str, query: &str) -> Vec<String> {
    let (status, body) = dist::http(
        address,
        "GET",
        &format!("/solr/{core}/select?q={query}&fl=UID&wt=csv"),
        None,
    );
    assert_eq!(status, 200, "{query}: {body}");
    body.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn the_configset_and_core_tool_work_on_a_real_solr() {
    let Some(distribution) = dist::build_or_skip() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let base = root.path().to_str().unwrap();
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let files = dist::FileServer::start(Ipv4Addr::LOCALHOST.into(), &distribution.archive);

    let mut settings = SolrSettings::new(Ipv4Addr::LOCALHOST.into(), 1 << 30);
    settings.port = port;
    settings.archive = SolrArchive {
        version: distribution.version.clone(),
        url: files.url(&distribution),
        sha512: distribution.sha512.clone(),
    };
    settings.install_root = format!("{base}/opt");
    settings.data_dir = format!("{base}/home");
    settings.log_dir = format!("{base}/logs");
    settings.env_file = format!("{base}/solr.in.sh");
    let templates = Templates::new(provision_solr::TEMPLATES).unwrap();
    let resources = provision_solr::resources(&settings, Phase::Configure, &templates).unwrap();

    // The layer's own archive script installs it; its check then passes.
    let Some(Resource::Script(archive)) = resources
        .iter()
        .find(|r| r.id().starts_with("script:solr-archive"))
    else {
        panic!("no archive script");
    };
    std::fs::create_dir_all(&settings.install_root).unwrap();
    assert!(!sh(&archive.check).0);
    let (ok, out) = sh(&archive.fix);
    assert!(ok, "the archive script failed: {out}");
    assert!(
        sh(&archive.check).0,
        "installed, but the check does not see it"
    );
    // A wrong sha512 is refused before anything is unpacked.
    let mut wrong = settings.clone();
    wrong.archive.sha512 = "0".repeat(128);
    wrong.archive.version = "9.0.0-wrong".into();
    let Resource::Script(wrong_script) =
        &provision_solr::resources(&wrong, Phase::Configure, &templates)
            .unwrap()
            .into_iter()
            .find(|r| r.id().starts_with("script:solr-archive"))
            .unwrap()
    else {
        unreachable!()
    };
    let (ok, out) = sh(&wrong_script.fix);
    assert!(!ok && out.contains("not the expected"), "{out}");
    assert!(!Path::new(&format!("{base}/opt/solr-9.0.0-wrong")).exists());

    // The configuration files as the layer writes them (the unit's job done by hand).
    for resource in &resources {
        if let Resource::File(file) = resource
            && file.path.starts_with(base)
        {
            std::fs::create_dir_all(Path::new(&file.path).parent().unwrap()).unwrap();
            std::fs::write(&file.path, &file.content).unwrap();
        }
    }
    std::fs::create_dir_all(&settings.log_dir).unwrap();
    let tool = format!("{base}/provision-solr-core");
    std::fs::write(&tool, server::core_tool(&settings, &templates).unwrap()).unwrap();

    let link = settings.install_dir();
    let started = Instant::now();
    let _solr = Killed(
        Command::new(format!("{link}/bin/solr"))
            .args(["start", "-f"])
            .env("SOLR_INCLUDE", &settings.env_file)
            .stdout(std::fs::File::create(format!("{base}/console.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("bin/solr starts"),
    );
    let address = format!("127.0.0.1:{port}");

    // The core, created once; the tool tells it exists (on disk) and answers its ping.
    assert!(!sh(&format!("sh {tool} exists plone")).0);
    let (ok, out) = sh(&format!("sh {tool} ensure plone"));
    let console = || std::fs::read_to_string(format!("{base}/console.log")).unwrap_or_default();
    assert!(ok, "ensure failed: {out}\n{}", console());
    assert!(out.contains("created core plone"), "{out}");
    eprintln!(
        "Solr up with core plone in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (ok, out) = sh(&format!("sh {tool} ensure plone"));
    assert!(ok && !out.contains("created"), "{out}");
    assert!(sh(&format!("sh {tool} exists plone")).0);
    assert!(sh(&format!("sh {tool} ping plone")).0);

    // collective.solr's dialect: XML updates and answers, the schema file, atomic updates.
    let (status, body) = dist::http(
        &address,
        "POST",
        "/solr/plone/update?commit=true",
        Some((
            "text/xml",
            &dist::document_xml("uid-1", "Über Kaffeemaschinen", "espresso crema"),
        )),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<int name=\"status\">0</int>"),
        "not XML: {body}"
    );
    assert_eq!(found(&address, "plone", "SearchableText:uber"), ["uid-1"]);
    assert_eq!(found(&address, "plone", "Title:*maschinen"), ["uid-1"]);
    assert_eq!(
        found(&address, "plone", "default:kaffeemaschinen"),
        ["uid-1"]
    );
    let (status, schema) = dist::http(
        &address,
        "GET",
        "/solr/plone/admin/file/?file=schema.xml",
        None,
    );
    assert_eq!(status, 200);
    assert!(schema.contains("<uniqueKey>UID</uniqueKey>"));
    let atomic = "<add><doc><field name=\"UID\">uid-1</field><field name=\"review_state\" update=\"set\">private</field></doc></add>";
    let (status, body) = dist::http(
        &address,
        "POST",
        "/solr/plone/update?commit=true",
        Some(("text/xml", atomic)),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        found(
            &address,
            "plone",
            "review_state:private%20AND%20Title:kaffeemaschinen"
        ),
        ["uid-1"]
    );

    // A changed configset goes live with a reload: query-time synonyms.
    assert!(found(&address, "plone", "SearchableText:coffee").is_empty());
    std::fs::write(
        format!("{}/synonyms.txt", settings.configset_conf_dir()),
        "coffee, kaffee, espresso\n",
    )
    .unwrap();
    let (ok, out) = sh(&format!("sh {tool} reload-all"));
    assert!(ok, "{out}");
    assert_eq!(found(&address, "plone", "SearchableText:coffee"), ["uid-1"]);

    // Reindex without downtime: rebuild beside, fill, swap; the old index stays for rollback.
    let (ok, out) = sh(&format!("sh {tool} rebuild plone"));
    assert!(ok, "{out}");
    let (status, _) = dist::http(
        &address,
        "POST",
        "/solr/plone_rebuild/update?commit=true",
        Some((
            "text/xml",
            &dist::document_xml("uid-2", "Rebuilt page", "fresh index"),
        )),
    );
    assert_eq!(status, 200);
    assert_eq!(found(&address, "plone", "*:*"), ["uid-1"]);
    let (ok, out) = sh(&format!("sh {tool} swap plone"));
    assert!(ok, "{out}");
    assert_eq!(found(&address, "plone", "*:*"), ["uid-2"]);
    assert_eq!(found(&address, "plone_rebuild", "*:*"), ["uid-1"]);
    assert!(sh(&format!("sh {tool} exists plone")).0);
    let (ok, out) = sh(&format!("sh {tool} cleanup plone"));
    assert!(ok, "{out}");
    let (ok, out) = sh(&format!("sh {tool} list"));
    assert!(ok);
    assert_eq!(out.trim(), "plone");
    // After a restart the swapped core is found under its name.
    drop(_solr);
    let _solr = Killed(
        Command::new(format!("{link}/bin/solr"))
            .args(["start", "-f"])
            .env("SOLR_INCLUDE", &settings.env_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // `wait` (the unit's start check) returns once the core is loaded again.
    let (ok, out) = sh(&format!("sh {tool} wait"));
    assert!(ok, "{out}");
    assert_eq!(found(&address, "plone", "*:*"), ["uid-2"]);
    let (ok, out) = sh(&format!("sh {tool} ensure plone"));
    assert!(ok && !out.contains("created"), "{out}");
}
