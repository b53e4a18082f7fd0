//! The control socket: `cgn-sim ctl mappings | restart | stats | config | pool | inject`.

use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use super::dataplane::{Dataplane, splice_metrics};
use super::{Call, DaemonConfig};
use crate::ctl::Request;
use crate::server::Server;

pub(crate) async fn serve(listener: UnixListener, tx: mpsc::Sender<Call>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(r);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match Request::parse(&line) {
                Some(req) => {
                    let (otx, orx) = oneshot::channel();
                    if tx.send((req, otx)).await.is_err() {
                        return;
                    }
                    orx.await.unwrap_or_default()
                }
                None => format!("error: unknown request {:?}\n", line.trim()),
            };
            let _ = w.write_all(answer.as_bytes()).await;
            let _ = w.shutdown().await;
        });
    }
}

pub(crate) fn execute(
    server: &mut Server,
    dataplane: Option<&mut Dataplane>,
    config: &DaemonConfig,
    req: Request,
) -> String {
    let now = Instant::now();
    match req {
        Request::Status { json: false } => crate::usage::status(server, now).to_text(),
        Request::Status { json: true } => crate::usage::status(server, now).to_json(),
        Request::Mappings { json: false } => server.render_table(now),
        Request::Mappings { json: true } => server.render_table_json(now) + "\n",
        Request::Restart { keep_state } => {
            server.restart(now, keep_state);
            if let (false, Some(dp)) = (keep_state, dataplane) {
                // State loss: the translator's sessions go with the mappings.
                dp.clear(server, now);
            }
            format!(
                "restarted ({}), epoch {}\n",
                if keep_state {
                    "state kept"
                } else {
                    "state lost"
                },
                server.epoch(now)
            )
        }
        Request::Stats => match dataplane {
            Some(dp) => splice_metrics(server.render_metrics(now), &dp.render_metrics()),
            None => server.render_metrics(now),
        },
        Request::Pool(ranges) => {
            let mut c = server.config().clone();
            c.set_pool_ranges(&ranges);
            match server.replace_pools(now, c.pools) {
                // With a dataplane, the daemon loop moves the TUN routes next (netlink is
                // async) and appends what it routed.
                Ok(()) => format!(
                    "pools replaced ({}), epoch {}, {} mappings kept\n",
                    ranges.join(" "),
                    server.epoch(now),
                    server.table().counts().maps
                ),
                Err(e) => format!("error: {e}\n"),
            }
        }
        Request::Inject {
            result,
            lifetime,
            count,
        } => {
            let result = pcp_client::wire::ResultCode::from(result);
            server.inject(result, lifetime, count);
            match server.injection() {
                Some(i) => format!(
                    "injecting {result} (lifetime {} s) into the next {count} MAP request(s)\n",
                    i.lifetime
                ),
                None => "injection cancelled\n".into(),
            }
        }
        Request::Config => {
            let mut s = format!(
                "# inside = {}:{}\n# ctl = {}\n",
                config.inside,
                config.port,
                config.ctl.display()
            );
            s.push_str(&toml::to_string(server.config()).unwrap_or_default());
            s
        }
    }
}
