//! The container image and the Agones manifests a studio applies, checked here where no
//! Docker engine or cluster runs: parsed, and the fields that matter compared with what the
//! server really does (its bind port, its health cadence, the settings its flags make).

use rewind_server::config::AGONES_HEALTH_EVERY;
use std::path::Path;
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_rewind-server");

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one document");
    docs.remove(0)
}

/// The image's entrypoint, as the server's flags (`ENTRYPOINT`, or `CMD` for the default
/// arguments).
fn image_args() -> Vec<String> {
    dockerfile_list("ENTRYPOINT ")
}

fn dockerfile_list(keyword: &str) -> Vec<String> {
    let dockerfile = read("Dockerfile");
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with(keyword))
        .unwrap_or_else(|| panic!("the Dockerfile has {keyword}"));
    let list = line[keyword.len()..].trim();
    let parsed = YamlLoader::load_from_str(list).unwrap().remove(0);
    parsed
        .as_vec()
        .unwrap_or_else(|| panic!("{keyword} in exec form"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The settings the server makes of these arguments (its own parser: `--print-config`), as
/// TOML; a flag it does not know fails the test.
fn settings(args: &[String]) -> toml::Table {
    let out = std::process::Command::new(BIN)
        .args(args.iter().skip_while(|a| !a.starts_with("--")))
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rewind-server refuses {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().parse().unwrap()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// What a GameServer spec must say, wherever it is (a GameServer, or a Fleet's template).
fn check_gameserver_spec(spec: &Yaml, what: &str) {
    let entry = image_args();
    let port: u16 = flag(&entry, "--bind")
        .and_then(|b| b.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("the image binds a port");
    let ports = spec["ports"].as_vec().expect("ports");
    let game = &ports[0];
    assert_eq!(
        game["protocol"].as_str(),
        Some("UDP"),
        "{what}: QUIC is UDP"
    );
    assert_eq!(
        game["containerPort"].as_i64(),
        Some(i64::from(port)),
        "{what}: the container port is the one the server binds"
    );
    // Health: Agones expects a health ping each period; the server sends one every 2 s while
    // its tick loops run, so at least two fit in a period.
    let health = &spec["health"];
    assert_eq!(health["disabled"].as_bool(), Some(false), "{what}");
    let period = health["periodSeconds"].as_i64().expect("periodSeconds");
    let every = AGONES_HEALTH_EVERY.as_secs() as i64;
    assert!(
        period >= 2 * every,
        "{what}: a {period} s period holds two pings sent every {every} s"
    );
    assert!(
        health["failureThreshold"].as_i64().unwrap_or(0) >= 1,
        "{what}"
    );
    assert!(health["initialDelaySeconds"].as_i64().is_some(), "{what}");
    // The players counter the server keeps, sized for the match.
    let container = &spec["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_vec()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(
        args.iter().any(|a| a == "--agones"),
        "{what}: the server talks to the SDK"
    );
    let size: i64 = flag(&args, "--match-size").unwrap().parse().unwrap();
    assert_eq!(
        spec["counters"]["players"]["capacity"].as_i64(),
        Some(size),
        "{what}"
    );
    // The SDK finds its sidecar through the environment Agones injects; nothing overrides it.
    if let Some(env) = container["env"].as_vec() {
        assert!(
            env.iter()
                .all(|e| !e["name"].as_str().unwrap_or("").starts_with("AGONES_SDK")),
            "{what}: AGONES_SDK_* is Agones's to set"
        );
    }
    // Every file the arguments name is mounted: the token key, the certificate and its key.
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_vec()
        .expect("volume mounts")
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for file_flag in ["--token-key-file", "--cert", "--key"] {
        let file = flag(&args, file_flag).unwrap_or_else(|| panic!("{what}: {file_flag}"));
        assert!(
            mounts.iter().any(|m| file.starts_with(m)),
            "{what}: {file} is mounted"
        );
    }
    let recordings = flag(&entry, "--record-dir").unwrap();
    assert!(
        mounts.contains(&recordings),
        "{what}: recordings on a volume"
    );
    // What the server makes of the image's entrypoint and these arguments together.
    let all: Vec<String> = entry.iter().cloned().chain(args.iter().cloned()).collect();
    let s = settings(&all);
    assert_eq!(s["agones"].as_bool(), Some(true), "{what}");
    assert_eq!(s["match_size"].as_integer(), Some(size), "{what}");
    assert_eq!(
        s["bind"].as_str(),
        Some(format!("0.0.0.0:{port}").as_str()),
        "{what}: the server listens on the container port, on every interface"
    );
    // The image runs without root; the pod says so too.
    let security = &spec["template"]["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true), "{what}");
    assert_ne!(security["runAsUser"].as_i64(), Some(0), "{what}");
}

#[test]
fn the_gameserver_fleet_and_autoscaler_say_what_the_server_does() {
    let gs = yaml("deploy/agones/gameserver.yaml");
    assert_eq!(gs["apiVersion"].as_str(), Some("agones.dev/v1"));
    assert_eq!(gs["kind"].as_str(), Some("GameServer"));
    check_gameserver_spec(&gs["spec"], "gameserver.yaml");

    let fleet = yaml("deploy/agones/fleet.yaml");
    assert_eq!(fleet["kind"].as_str(), Some("Fleet"));
    check_gameserver_spec(&fleet["spec"]["template"]["spec"], "fleet.yaml");
    // The fleet's GameServers are the single GameServer's, field for field.
    assert_eq!(fleet["spec"]["template"]["spec"], gs["spec"]);

    let scaler = yaml("deploy/agones/fleetautoscaler.yaml");
    assert_eq!(scaler["kind"].as_str(), Some("FleetAutoscaler"));
    assert_eq!(scaler["spec"]["fleetName"], fleet["metadata"]["name"]);
    let buffer = &scaler["spec"]["policy"]["buffer"];
    let (min, max) = (
        buffer["minReplicas"].as_i64().unwrap(),
        buffer["maxReplicas"].as_i64().unwrap(),
    );
    assert!(buffer["bufferSize"].as_i64().unwrap() <= min && min <= max);
}

#[test]
fn the_image_is_multi_stage_non_root_with_recordings_on_a_volume() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "a build stage and a runtime stage");
    assert!(
        dockerfile.contains("--features agones"),
        "built with the SDK"
    );
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    let entry = image_args();
    let port = flag(&entry, "--bind")
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(
        dockerfile.contains(&format!("EXPOSE {port}/udp")),
        "the game port is exposed as UDP"
    );
    let recordings = flag(&entry, "--record-dir").unwrap();
    assert!(dockerfile.contains(&format!("VOLUME [\"{recordings}\"]")));
    assert!(
        flag(&entry, "--metrics").is_some(),
        "Prometheus can scrape it"
    );
    // The entrypoint and the default arguments are flags the server takes, with these values.
    let all: Vec<String> = entry
        .iter()
        .cloned()
        .chain(dockerfile_list("CMD "))
        .collect();
    let s = settings(&all);
    assert_eq!(s["record_dir"].as_str(), Some(recordings));
    assert_eq!(s["metrics"].as_str(), Some("0.0.0.0:9100"));
    assert_eq!(s["agones"].as_bool(), Some(true));
}
