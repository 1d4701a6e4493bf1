//! The `meshcam` command: the camera daemon (the default subcommand), and
//! `view` and `ctl`, which reach cameras over MQTT. A build with the `tools`
//! feature also has `bench` and `soak` (`meshcam::tools`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use meshcam::config::{Config, ConfigError, MqttConfig, Overrides};
use meshcam::mqtt::Broker;

#[derive(Parser)]
#[command(
    name = "meshcam",
    version,
    about = "WebRTC camera agent: one encode, a mesh of viewers, MQTT signaling"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// Configuration file [default: /etc/meshcam/meshcam.toml when present]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Device id (peer id and MQTT client id)
    #[arg(long)]
    device_id: Option<String>,
    /// Broker URL, mqtt://HOST[:PORT] or mqtts://HOST[:PORT]
    #[arg(long)]
    mqtt_url: Option<String>,
    /// A room to join at start (repeatable)
    #[arg(long = "room")]
    rooms: Vec<String>,
    /// Directory for durable state
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Video source: v4l2, libcamera, test or pipeline
    #[arg(long)]
    source: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the camera daemon (the default)
    Run,
    /// Join a room as a headless viewer and report what arrives
    View(Box<ViewArgs>),
    /// Send a command to a camera, or list the cameras on a broker
    Ctl(CtlArgs),
    // `bench` and `soak`: only in a build with the `tools` feature.
    #[cfg(feature = "tools")]
    #[command(flatten)]
    Tools(meshcam::tools::Command),
}

/// How `view` and `ctl` reach the broker: these flags, else the `[mqtt]`
/// section of `--config` (with its password, CA and client certificate
/// files), else the defaults.
#[derive(clap::Args)]
struct BrokerArgs {
    /// Broker URL [default: mqtt.url of --config, else mqtt://127.0.0.1:1883]
    #[arg(long)]
    broker: Option<String>,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// Topic prefix [default: mqtt.prefix of --config, else meshcam]
    #[arg(long)]
    prefix: Option<String>,
}

impl BrokerArgs {
    /// The broker and the topic prefix, with the files the login names read.
    fn resolve(self, config: Option<&Path>) -> Result<(Broker, String), ConfigError> {
        let mut mqtt = match config {
            Some(path) => Config::load(Some(path), &Overrides::default())?.client_mqtt(),
            None => MqttConfig {
                url: "mqtt://127.0.0.1:1883".into(),
                ..MqttConfig::default()
            },
        };
        if let Some(url) = self.broker {
            mqtt.url = url;
        }
        if let Some(username) = self.username {
            mqtt.username = Some(username);
        }
        if let Some(password) = self.password {
            mqtt.password = Some(password);
            mqtt.password_file = None;
        }
        if let Some(prefix) = self.prefix {
            mqtt.prefix = prefix;
        }
        Ok((Broker::from_config(&mqtt)?, mqtt.prefix))
    }
}

#[derive(clap::Args)]
struct CtlArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The camera to command
    #[arg(long)]
    device: Option<String>,
    /// Seconds to wait for the answer
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// List the cameras whose status the broker holds
    Ls,
    /// Join a room and remember it
    Join { room: String },
    /// Leave a room and forget it
    Leave { room: String },
    /// The device status
    Status,
    /// The telemetry object
    Stats,
    /// Force a key frame now
    Keyframe,
    /// Rebuild the capture pipeline (viewers stay connected)
    Restart,
    /// Mute the microphone (kept across restarts)
    Mute,
    /// Unmute the microphone
    Unmute,
    /// Change settings: bitrate_kbps=N fps=N width=N height=N max_viewers=N
    /// layer_bitrates_kbps=N,N whip_mode=off|always|overflow
    Set {
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// Hold viewers on a layer (0 is the top one), or `adapt` to let them choose
    Pin {
        layer: String,
        /// One viewer; without it, every viewer
        #[arg(long)]
        peer: Option<String>,
    },
    /// Take a JPEG of the current picture
    Snapshot {
        /// Write the JPEG here
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ViewArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Room to join
    #[arg(long)]
    room: String,
    /// Peer id (random when not given)
    #[arg(long)]
    id: Option<String>,
    /// Number of viewers to run in this process
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Decode the video with avdec_h264
    #[arg(long)]
    decode: bool,
    /// Stop once every viewer has this many frames (decoded frames with --decode)
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds between two report lines
    #[arg(long, default_value_t = 1.0)]
    report_interval: f64,
    /// Address for media sockets
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
    /// Do not negotiate transport-wide congestion control: the camera
    /// hears only receiver reports
    #[arg(long)]
    no_twcc: bool,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::prelude::*;
    // The embedded broker reports every connection and probe; its failures
    // that matter reach our own log. RUST_LOG=rumqttd=info shows them all.
    // The DTLS stack warns of every TLS extension it does not take (an
    // OpenSSL peer such as Janus offers several on every handshake); a
    // handshake that fails is reported by the connection.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,webrtc=warn,rtc=warn,rtc_ice=error,rtc_dtls=error,rumqttd=off")
    });
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(!journald && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let layer = if journald {
        // journald stamps every line itself.
        layer.without_time().boxed()
    } else {
        layer
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .boxed()
    };
    // A statement of the libraries beneath writes a few lines a window:
    // the WebRTC stack logs every packet it cannot send (meshcam::log_limit).
    let repeats = std::sync::Mutex::new(meshcam::log_limit::Repeats::default());
    let limit = tracing_subscriber::filter::filter_fn(move |metadata| {
        !metadata.is_event()
            || meshcam::log_limit::Repeats::exempt(metadata.target())
            || repeats.lock().is_ok_and(|mut r| {
                r.allow(
                    metadata.callsite(),
                    metadata.target(),
                    std::time::Instant::now(),
                )
            })
    });
    tracing_subscriber::registry()
        // `and`: lines the level filter lets through, then the limit.
        .with(layer.with_filter(filter.and(limit)))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshcam: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        None | Some(Command::Run) => run_daemon(&runtime, cli.run),
        Some(Command::View(args)) => run_view(&runtime, args, cli.run.config.as_deref()),
        Some(Command::Ctl(args)) => runtime.block_on(run_ctl(args, cli.run.config.as_deref())),
        #[cfg(feature = "tools")]
        Some(Command::Tools(tool)) => tool.run(),
    }
}

/// Reports a configuration error the way the daemon does, exit status 2.
fn config_error(tool: &str, e: &ConfigError) -> ExitCode {
    let kind = match e {
        ConfigError::Invalid { .. } => "invalid configuration",
        ConfigError::Load(_) => "configuration",
    };
    eprintln!("{tool}: {kind}: {e}");
    ExitCode::from(2)
}

async fn run_ctl(args: CtlArgs, config: Option<&Path>) -> ExitCode {
    use meshcam::ctl;
    use serde_json::{Map, Value, json};
    let (broker, prefix) = match args.broker.resolve(config) {
        Ok(resolved) => resolved,
        Err(e) => return config_error("meshcam ctl", &e),
    };
    let options = ctl::CtlOptions {
        broker,
        prefix,
        timeout: Duration::from_secs_f64(args.timeout.max(0.1)),
    };
    let simple = |cmd: &str| {
        let mut m = Map::new();
        m.insert("cmd".into(), json!(cmd));
        m
    };
    let with_room = |cmd: &str, room: String| {
        let mut m = simple(cmd);
        m.insert("room".into(), json!(room));
        m
    };
    let mut out = None;
    let command = match args.command {
        CtlCommand::Ls => {
            return match ctl::list(&options).await {
                Ok(devices) => {
                    for d in devices {
                        println!("{d}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meshcam ctl: {}", e.message);
                    ExitCode::from(e.code)
                }
            };
        }
        CtlCommand::Join { room } => with_room("join", room),
        CtlCommand::Leave { room } => with_room("leave", room),
        CtlCommand::Status => simple("status"),
        CtlCommand::Stats => simple("stats"),
        CtlCommand::Keyframe => simple("keyframe"),
        CtlCommand::Restart => simple("restart"),
        CtlCommand::Mute => simple("mute"),
        CtlCommand::Unmute => simple("unmute"),
        CtlCommand::Set { settings } => match ctl::set_arguments(&settings) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("meshcam ctl: {e}");
                return ExitCode::from(2);
            }
        },
        CtlCommand::Pin { layer, peer } => match ctl::pin_arguments(&layer, peer) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("meshcam ctl: {e}");
                return ExitCode::from(2);
            }
        },
        CtlCommand::Snapshot { out: path } => {
            out = path;
            simple("snapshot")
        }
    };
    let Some(device) = args.device else {
        eprintln!("meshcam ctl: --device is required for this command");
        return ExitCode::from(2);
    };
    match ctl::command(&options, &device, command).await {
        Ok((reply, jpeg)) => {
            println!("{reply}");
            if let (Some(path), Some(jpeg)) = (out, jpeg)
                && let Err(e) = std::fs::write(&path, jpeg)
            {
                eprintln!("meshcam ctl: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            if reply["ok"] == Value::Bool(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(ctl::EXIT_ERROR_REPLY)
            }
        }
        Err(e) => {
            eprintln!("meshcam ctl: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn run_daemon(runtime: &tokio::runtime::Runtime, args: RunArgs) -> ExitCode {
    let overrides = Overrides {
        device_id: args.device_id,
        mqtt_url: args.mqtt_url,
        state_dir: args.state_dir,
        rooms: args.rooms,
        source: args.source,
    };
    let source = meshcam::daemon::ConfigSource {
        path: args.config.clone(),
        overrides: overrides.clone(),
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => return config_error("meshcam", &e),
    };
    match runtime.block_on(meshcam::daemon::run(config, source)) {
        Ok(()) => ExitCode::SUCCESS,
        // A file the configuration names (mqtt.password_file, ...) is unusable.
        Err(e) => match e.downcast::<ConfigError>() {
            Ok(e) => config_error("meshcam", &e),
            // The installation lacks a GStreamer element: as final as a
            // configuration error.
            Err(e) if e.is::<meshcam::media::MissingElements>() => {
                eprintln!("meshcam: {e:#}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("meshcam: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_view(
    runtime: &tokio::runtime::Runtime,
    args: Box<ViewArgs>,
    config: Option<&Path>,
) -> ExitCode {
    let (broker, prefix) = match args.broker.resolve(config) {
        Ok(resolved) => resolved,
        Err(e) => return config_error("meshcam view", &e),
    };
    let options = meshcam::view::ViewOptions {
        broker,
        prefix,
        room: args.room,
        id: args.id,
        count: args.count.max(1),
        decode: args.decode,
        frames: args.frames,
        duration: args.duration.map(Duration::from_secs_f64),
        report_interval: Duration::from_secs_f64(args.report_interval.max(0.05)),
        bind: args.bind,
        twcc: !args.no_twcc,
    };
    match runtime.block_on(meshcam::view::run(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("meshcam view: {e:#}");
            ExitCode::from(2)
        }
    }
}
