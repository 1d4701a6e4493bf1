use super::*;

#[test]
fn the_documented_example_file_is_valid_and_matches_the_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/meshcam.toml"))
        .unwrap();
    let documented = Config::from_toml(&text).unwrap();
    let defaults = Config::from_toml("").unwrap();
    assert_eq!(
        serde_json::to_value(&documented).unwrap(),
        serde_json::to_value(&defaults).unwrap()
    );
}

fn error_of(text: &str) -> String {
    Config::from_toml(text).unwrap_err().to_string()
}

#[test]
fn errors_name_the_key_and_the_accepted_values() {
    let e = error_of("[video]\nwidth = 5");
    assert!(
        e.contains("video.width") && e.contains("160 to 3840"),
        "{e}"
    );
    let e = error_of("[video]\nencoder = \"nvenc\"");
    assert!(e.contains("video.encoder") && e.contains("x264enc"), "{e}");
    let e = error_of("[video]\nsource = \"webcam\"");
    assert!(e.contains("source") && e.contains("v4l2"), "{e}");
    let e = error_of("[mqtt]\nurl = \"http://x\"");
    assert!(e.contains("mqtt.url") && e.contains("mqtts://"), "{e}");
    let e = error_of("[broker]\nws_listen = \"0.0.0.0:9001\"");
    assert!(
        e.contains("broker.ws_listen") && e.contains("broker.username"),
        "{e}"
    );
    let e = error_of("[web]\nlisten = \"0.0.0.0:8080\"");
    assert!(e.contains("web.listen") && e.contains("credentials"), "{e}");
    let e = error_of("[device]\nid = \"a b\"");
    assert!(e.contains("device.id"), "{e}");
    let e = error_of(&format!("rooms = [{}]", vec!["\"r\""; 17].join(",")));
    assert!(e.contains("rooms") && e.contains("at most 16"), "{e}");
    let e = error_of("rooms = [\"ok\", \"not/ok\"]");
    assert!(e.contains("rooms"), "{e}");
    let e = error_of("[video]\nwidht = 640");
    assert!(e.contains("widht"), "{e}");
    let e = error_of("[webrtc]\nudp_port_min = 5000");
    assert!(e.contains("udp_port_min"), "{e}");
    let e = error_of("[video]\nsource = \"pipeline\"");
    assert!(e.contains("video.pipeline"), "{e}");
    let e = error_of("[[webrtc.ice_servers]]\nurls = [\"http://x\"]");
    assert!(e.contains("ice_servers[0]"), "{e}");
    let e = error_of("[talk]\necho = \"aec\"");
    assert!(e.contains("echo") && e.contains("half-duplex"), "{e}");
}

#[test]
fn every_echo_mode_reads_by_its_name() {
    for mode in [EchoMode::Cancel, EchoMode::HalfDuplex, EchoMode::Off] {
        let config = Config::from_toml(&format!("[talk]\necho = \"{}\"", mode.name())).unwrap();
        assert_eq!(config.talk.echo, mode);
    }
    assert_eq!(Config::from_toml("").unwrap().talk.echo, EchoMode::Cancel);
}

#[test]
fn tools_reach_the_embedded_broker_with_its_credentials() {
    let c = Config::from_toml(
        "[broker]\nlisten = \"0.0.0.0:1884\"\nusername = \"u\"\npassword = \"p\"",
    )
    .unwrap();
    let mqtt = c.client_mqtt();
    assert_eq!(mqtt.url, "mqtt://127.0.0.1:1884");
    assert_eq!(mqtt.username.as_deref(), Some("u"));
    assert_eq!(mqtt.password.as_deref(), Some("p"));
    let external = Config::from_toml("[mqtt]\nurl = \"mqtts://b\"\nprefix = \"x\"").unwrap();
    assert_eq!(external.client_mqtt(), external.mqtt);
}

#[test]
fn standalone_listens_on_loopback_and_beyond_only_with_credentials() {
    let c = Config::from_toml("").unwrap();
    assert!(c.embedded());
    assert_eq!(c.web_listen(), Some("127.0.0.1:8080"));
    let open = Config::from_toml(
        "[broker]\nlisten = \"0.0.0.0:1883\"\nws_listen = \"0.0.0.0:9001\"\n\
         username = \"u\"\npassword = \"p\"\n[web]\nlisten = \"0.0.0.0:8080\"",
    )
    .unwrap();
    assert_eq!(open.web_listen(), Some("0.0.0.0:8080"));
    let external = Config::from_toml("[mqtt]\nurl = \"mqtt://b:1883\"").unwrap();
    assert_eq!(external.web_listen(), None);
    let off = Config::from_toml("[web]\nlisten = \"off\"").unwrap();
    assert_eq!(off.web_listen(), None);
}

#[test]
fn ice_servers_carry_turn_credentials() {
    let c = Config::from_toml(
        "[[webrtc.ice_servers]]\nurls = [\"stun:stun.example.org:3478\"]\n\
         [[webrtc.ice_servers]]\nurls = [\"turn:turn.example.org:3478?transport=udp\"]\n\
         username = \"u\"\ncredential = \"p\"",
    )
    .unwrap();
    assert_eq!(c.webrtc.ice_servers.len(), 2);
    assert_eq!(c.webrtc.ice_servers[1].credential, "p");
}

#[test]
fn layers_default_to_one_low_layer_and_can_be_configured_or_removed() {
    let default = Config::from_toml("").unwrap();
    assert_eq!(
        default.video.lower_layers(),
        [LayerConfig {
            width: 640,
            height: 360,
            bitrate_kbps: 400
        }]
    );
    let one = Config::from_toml("[video]\nlayers = []\n").unwrap();
    assert!(one.video.lower_layers().is_empty());
    let two = Config::from_toml(
        "[video]\npin_layer = 2\n[[video.layers]]\nwidth = 960\nheight = 540\nbitrate_kbps = 900\n\
         [[video.layers]]\nwidth = 480\nheight = 270\nbitrate_kbps = 250\n",
    )
    .unwrap();
    assert_eq!(two.video.lower_layers().len(), 2);
    assert_eq!(two.video.pin_layer, Some(2));
}

#[test]
fn a_layer_must_be_smaller_and_cheaper_than_the_one_above() {
    let layer = |w: u32, h: u32, kbps: u32| {
        error_of(&format!(
            "[video]\n[[video.layers]]\nwidth = {w}\nheight = {h}\nbitrate_kbps = {kbps}\n"
        ))
    };
    assert!(layer(1920, 1080, 400).contains("video.layers[0]"));
    assert!(layer(640, 360, 2000).contains("below the layer above"));
    assert!(layer(641, 360, 400).contains("even"));
    assert!(error_of("[video]\npin_layer = 3\n").contains("video.pin_layer"));
}

#[test]
fn whip_settings_name_what_is_missing_or_wrong() {
    let e = error_of("[whip]\nmode = \"overflow\"");
    assert!(e.contains("whip.endpoint") && e.contains("overflow"), "{e}");
    let e = error_of("[whip]\nmode = \"sometimes\"");
    assert!(e.contains("off, always, overflow"), "{e}");
    let e = error_of("[whip]\nendpoint = \"sfu.example.net/whip\"");
    assert!(e.contains("whip.endpoint") && e.contains("https://"), "{e}");
    let e = error_of("[whip]\ntoken = \"a\"\ntoken_file = \"/t\"");
    assert!(e.contains("whip.token_file"), "{e}");
    let e = error_of("[whip.watch]\nkind = \"whep\"\nurl = \"https://x\"");
    assert!(
        e.contains("whip.watch.kind") && e.contains("janus-videoroom"),
        "{e}"
    );
    let e = error_of("[whip.watch]\nkind = \"janus-videoroom\"\nurl = \"https://x/janus\"");
    assert!(e.contains("whip.watch.room"), "{e}");
    let ok = Config::from_toml(
        "[whip]\nmode = \"always\"\nendpoint = \"https://sfu/whip/cam\"\n\
         [whip.watch]\nkind = \"janus-videoroom\"\nurl = \"https://sfu/janus\"\nroom = 7\n",
    )
    .unwrap();
    assert_eq!(ok.whip.mode, WhipMode::Always);
}

#[test]
fn the_whip_token_comes_from_its_file_and_a_missing_file_is_named() {
    let dir = std::env::temp_dir().join(format!("meshcam-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "s3cret\n").unwrap();
    let whip = WhipConfig {
        token_file: Some(file.clone()),
        ..WhipConfig::default()
    };
    assert_eq!(whip.bearer().unwrap().as_deref(), Some("s3cret"));
    std::fs::remove_file(&file).unwrap();
    let e = whip.bearer().unwrap_err().to_string();
    assert!(e.contains("whip.token_file") && e.contains("token"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
