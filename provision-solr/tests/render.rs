//! Every template renders with its example, and every file the provisioner writes (and every
//! script it runs) is a snapshot: a change to any of them shows up in review.

use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::template::Templates;
use provision_solr::{SolrArchive, SolrSettings, server};

const GIB: u64 = 1024 * 1024 * 1024;

fn templates() -> Templates {
    Templates::new(provision_solr::TEMPLATES).expect("templates parse")
}

fn snapshot_name(prefix: &str, path: &str) -> String {
    format!(
        "{prefix}{}",
        path.trim_start_matches('/').replace('/', "__")
    )
}

/// Snapshot the content of every file and unit, the check and fix of every script, and the
/// list of resources with what restarts or reloads the service.
fn snapshot_resources(prefix: &str, resources: &[Resource]) {
    let mut listing = String::new();
    for resource in resources {
        listing.push_str(&resource.id());
        match resource {
            Resource::Service(service) => {
                for (what, ids) in [
                    ("restart", &service.restart_on),
                    ("reload", &service.reload_on),
                ] {
                    if !ids.is_empty() {
                        listing.push_str(&format!("\n  {what} on {}", ids.join(", ")));
                    }
                }
            }
            Resource::File(file) => {
                listing.push_str(&format!(" {}:{} {:04o}", file.owner, file.group, file.mode));
                let content = String::from_utf8(file.content.clone()).expect("text");
                insta::assert_snapshot!(snapshot_name(prefix, &file.path), content);
            }
            Resource::Directory(dir) => {
                listing.push_str(&format!(" {}:{} {:04o}", dir.owner, dir.group, dir.mode));
            }
            Resource::Symlink(link) => listing.push_str(&format!(" -> {}", link.target)),
            Resource::Packages(packages) => {
                listing.push_str(&format!(" ({})", packages.names.join(" ")))
            }
            Resource::Unit(unit) => {
                insta::assert_snapshot!(snapshot_name(prefix, &unit.path()), unit.content);
            }
            Resource::Script(script) => {
                listing.push_str(&format!(": {}", script.summary));
                insta::assert_snapshot!(
                    format!("{prefix}script__{}", script.name),
                    format!("# check\n{}\n# fix\n{}\n", script.check, script.fix)
                );
            }
            _ => {}
        }
        listing.push('\n');
    }
    insta::assert_snapshot!(format!("{prefix}resources"), listing);
}

#[test]
fn every_template_renders_with_its_example() {
    let templates = templates();
    for source in provision_solr::TEMPLATES {
        let context: serde_json::Value = serde_json::from_str(source.example)
            .unwrap_or_else(|e| panic!("{}: example is not JSON: {e}", source.name));
        let rendered = templates
            .render(source.name, &context)
            .unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(
            format!("template__{}", source.name.replace('/', "__")),
            rendered
        );
    }
}

#[test]
fn the_defaults_install_the_official_archive() {
    let templates = templates();
    let mut settings = SolrSettings::new("10.0.0.5".parse().unwrap(), 16 * GIB);
    settings.allowed_clients = vec!["10.0.0.11".into(), "10.0.0.12".into()];
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(provision_solr::resources(&settings, phase, &templates).unwrap());
    }
    snapshot_resources("defaults__", &all);
}

#[test]
fn a_custom_archive_data_dir_and_two_cores() {
    let templates = templates();
    let mut settings = SolrSettings::new("fd00::5".parse().unwrap(), 2 * GIB);
    settings.archive = SolrArchive {
        version: "9.10.1-site".into(),
        url: "http://10.77.0.1:8000/solr-9.10.1-site.tgz".into(),
        sha512: "ab".repeat(64),
    };
    settings.start_command = "/usr/bin/env SOLR_MODE=standalone bin/solr start -f".into();
    settings.data_dir = "/srv/solr".into();
    settings.cores = vec!["plone".into(), "intranet".into()];
    settings.open_files = 20_000;
    settings.allowed_clients = vec!["fd00::11".into(), "10.1.0.0/16".into()];
    settings.extra_environment = vec![(
        "SOLR_OPTS".into(),
        "-Dsolr.autoSoftCommit.maxTime=1000".into(),
    )];
    let resources = provision_solr::resources(&settings, Phase::Configure, &templates).unwrap();
    snapshot_resources("custom__", &resources);
}

#[test]
fn the_service_reloads_for_the_configset_and_restarts_for_the_rest() {
    let templates = templates();
    let settings = SolrSettings::new("10.0.0.5".parse().unwrap(), 16 * GIB);
    let resources = provision_solr::resources(&settings, Phase::Configure, &templates).unwrap();
    let service = resources
        .iter()
        .find_map(|r| match r {
            Resource::Service(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        service
            .reload_on
            .contains(&"file:/var/lib/solr/configsets/plone/conf/schema.xml".to_string())
    );
    assert!(
        service
            .restart_on
            .contains(&"script:solr-archive-9.10.1".to_string())
    );
    assert!(
        service
            .restart_on
            .contains(&"file:/etc/default/solr.in.sh".to_string())
    );
    // The cores come after the service: creating them needs Solr running.
    let ids: Vec<String> = resources.iter().map(Resource::id).collect();
    let service_at = ids.iter().position(|id| id == "service:solr").unwrap();
    let core_at = ids
        .iter()
        .position(|id| id == "script:solr-core-plone")
        .unwrap();
    assert!(service_at < core_at, "{ids:?}");
    assert_eq!(
        server::ping_command("plone"),
        "/usr/local/sbin/provision-solr-core ping plone"
    );
    assert_eq!(
        provision_solr::ping_url(&settings, "plone"),
        "http://10.0.0.5:8983/solr/plone/admin/ping"
    );
}

#[test]
fn bad_settings_are_refused_before_any_resource() {
    let templates = templates();
    let mut settings = SolrSettings::new("0.0.0.0".parse().unwrap(), 16 * GIB);
    let error = provision_solr::resources(&settings, Phase::Setup, &templates).unwrap_err();
    assert!(error.to_string().starts_with("bind_address:"), "{error}");
    settings.bind_address = "10.0.0.5".parse().unwrap();
    settings.archive.sha512 = "not-a-hash".into();
    let error = provision_solr::resources(&settings, Phase::Configure, &templates).unwrap_err();
    assert!(error.to_string().starts_with("archive.sha512:"), "{error}");
}

/// The schema is what collective.solr parses: every field's type is declared before it, with a
/// class collective.solr knows for dates and integers, and the unique key is UID.
#[test]
fn the_schema_speaks_collective_solrs_dialect() {
    let schema = server::SCHEMA_XML;
    assert!(schema.contains("<uniqueKey>UID</uniqueKey>"));
    let mut types = std::collections::BTreeMap::new();
    for line in schema.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("<fieldType name=\"") {
            let name = rest.split('"').next().unwrap();
            let class = rest
                .split("class=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            types.insert(name.to_string(), class.to_string());
        }
        if let Some(rest) = line.strip_prefix("<field name=\"") {
            let name = rest.split('"').next().unwrap();
            let kind = rest
                .split("type=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let class = types
                .get(kind)
                .unwrap_or_else(|| panic!("{name}: type {kind} not declared before it"));
            assert!(class.starts_with("solr."), "{name}: {class}");
            if name != "_version_" {
                assert!(
                    line.contains("stored=\""),
                    "{name} says nothing about stored"
                );
            }
        }
    }
    for (field, class) in [
        ("created", "solr.DatePointField"),
        ("path_depth", "solr.IntPointField"),
        ("is_folderish", "solr.BoolField"),
        ("SearchableText", "solr.TextField"),
    ] {
        let line = schema
            .lines()
            .find(|l| l.trim().starts_with(&format!("<field name=\"{field}\"")))
            .unwrap();
        let kind = line
            .split("type=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(types[kind], class, "{field}");
    }
}
