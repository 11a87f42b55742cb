//! CONFIG SET / GET / RESETSTAT of a session (see [`crate::config_set`]).

use super::Session;
use crate::config_set::{config_set, reset_stats};
use crate::reply;
use bytes::Bytes;
use kodis_common::server_config::{self};
use std::sync::Arc;

impl Session {
    /// CONFIG: GET from the first group's master (on the backend connections), SET
    /// and RESETSTAT on every server (see the module doc), REWRITE refused.
    pub(crate) fn config(
        &mut self,
        req: &kodis_common::resp::Request,
        outbox: &mut crate::outbox::Outbox,
    ) -> crate::pending::Pending {
        use crate::error_replies::{refused, wrong_args};
        use crate::pending::Pending;
        let argc = req.argc();
        if argc < 2 {
            return Pending::Ready(wrong_args("config"));
        }
        let sub = String::from_utf8_lossy(req.arg(1)).to_ascii_uppercase();
        match sub.as_str() {
            "GET" if argc == 2 => Pending::Ready(wrong_args("config|get")),
            "GET" if (2..argc).any(|i| super::local::is_secret_config(req.arg(i))) => {
                self.ctx.metrics.errors.refused.inc();
                Pending::Ready(refused(
                    "CONFIG GET",
                    "glob patterns and password parameters would reveal backend secrets; \
                     ask for parameters by name",
                ))
            }
            "GET" => {
                let routes = self.ctx.router.load();
                match routes.groups.first() {
                    Some(g) => outbox.forward(&g.master, req.to_resp()),
                    None => Pending::Ready(reply::error("ERR kodis: no backend group")),
                }
            }
            "SET" | "RESETSTAT" if !self.ctx.config.allow_config_set => {
                self.ctx.metrics.errors.refused.inc();
                Pending::Ready(refused(
                    &format!("CONFIG {sub}"),
                    "allow_config_set is off (it changes every server of the cluster)",
                ))
            }
            "SET" if argc < 4 => Pending::Ready(wrong_args("config|set")),
            "RESETSTAT" if argc != 2 => Pending::Ready(wrong_args("config|resetstat")),
            "SET" | "RESETSTAT" => {
                let pairs = if sub == "SET" {
                    let args: Vec<&[u8]> = (2..argc).map(|i| req.arg(i)).collect();
                    match server_config::parse_pairs(&args) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            self.ctx.metrics.errors.refused.inc();
                            return Pending::Ready(Bytes::from(e.to_resp()));
                        }
                    }
                } else {
                    None
                };
                // As on one server: it takes effect after the client's earlier
                // requests and before its later ones.
                if !self.idle {
                    return Pending::Barrier;
                }
                let (tx, rx) = crate::reply_slot::channel();
                let ctx = self.ctx.clone();
                tokio::spawn(async move {
                    let r = match pairs {
                        Some(p) => config_set(ctx, p).await,
                        None => reset_stats(ctx).await,
                    };
                    tx.send(Ok(r));
                });
                self.paused = true;
                Pending::Backend(rx, Arc::from("kodis-proxy (CONFIG on every server)"))
            }
            "REWRITE" => {
                self.ctx.metrics.errors.refused.inc();
                Pending::Ready(refused(
                    "CONFIG REWRITE",
                    "the cluster's configuration is kept by kodis (CONFIG SET through the \
                     proxy is recorded by the dashboard and applied again to every server \
                     that starts), not in the servers' config files",
                ))
            }
            _ => {
                self.ctx.metrics.errors.refused.inc();
                Pending::Ready(refused(
                    &format!("CONFIG {sub}"),
                    "only CONFIG GET, SET and RESETSTAT are served by the proxy",
                ))
            }
        }
    }
}
