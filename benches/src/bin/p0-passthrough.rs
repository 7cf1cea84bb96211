//! P0: the smallest Pingora reverse proxy — every request to one upstream, nothing else — so
//! the load test can separate Pingora's own cost from the gateway's.
//!
//! `p0-passthrough --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--threads N]`

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Passthrough {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() -> anyhow::Result<()> {
    let (mut listen, mut upstream, mut threads) = (None, None, 1usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--listen" => listen = Some(value()?),
            "--upstream" => upstream = Some(value()?),
            "--threads" => threads = value()?.parse()?,
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let listen = listen.ok_or_else(|| anyhow::anyhow!("--listen is required"))?;
    let upstream = upstream.ok_or_else(|| anyhow::anyhow!("--upstream is required"))?;
    let conf = ServerConf {
        threads,
        upgrade_sock: std::env::temp_dir()
            .join(format!("p0-upgrade-{}.sock", std::process::id()))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Passthrough { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    println!("p0-passthrough listening on {listen}");
    server.run_forever()
}
