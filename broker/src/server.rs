//! The accept loop, connection limit and graceful shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use strata_storage::{Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Cidr, Config, ConnectionLimits};
use crate::group::Coordinator;
use crate::handler::{Ctx, Listener};
use std::time::Duration;

/// KV key of the cluster id, generated on first start and kept with the data.
const CLUSTER_ID_KEY: &[u8] = b"broker.cluster_id";

/// A running broker.
pub struct Broker {
    addr: SocketAddr,
    /// Every listener's name and bound address, in `listeners` order.
    listener_addrs: Vec<(String, SocketAddr)>,
    admin_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    ctx: Arc<Ctx>,
}

impl Broker {
    /// Validates `config`, opens the store, binds the listener and starts serving on the
    /// current tokio runtime.
    pub async fn start(config: Config) -> anyhow::Result<Broker> {
        config.validate()?;
        let specs = config.listener_specs()?;
        // Security files first: a bad one stops the broker before it opens anything.
        let tls = crate::tls::Tls::from_config(&config).context("loading TLS files")?;
        let plain_users = match (
            &config.sasl_plain_users_file,
            specs.iter().any(|s| s.protocol.sasl()),
        ) {
            (Some(path), true) => Some(Arc::new(crate::sasl::PlainUsers::load(path)?)),
            _ => None,
        };
        let mut store_config = StoreConfig::new(config.data_dir.clone());
        store_config.fsync = config.fsync;
        store_config.max_message_bytes = config.message_max_bytes;
        store_config.segment_bytes = config.segment_bytes;
        store_config.segment_ms = config.segment_ms;
        store_config.log_append_time = config.message_timestamp_type == "LogAppendTime";
        store_config.read_cache_bytes = config.fetch_cache_mb.saturating_mul(1 << 20);
        store_config.max_partitions = config.max_partitions;
        store_config.producer_id_expiration_ms = config.producer_id_expiration_ms;
        let store = tokio::task::spawn_blocking(move || Store::open(store_config))
            .await?
            .with_context(|| format!("opening the log in {}", config.data_dir.display()))?;
        let cluster_id = cluster_id(&store)?;
        let mut listeners = Vec::with_capacity(specs.len());
        for spec in &specs {
            let l = bind(spec.bind)
                .with_context(|| format!("cannot listen on {} ({})", spec.bind, spec.name))?;
            let bound = l.local_addr()?;
            let (host, port) = spec.advertised(bound);
            let info = Arc::new(Listener {
                name: spec.name.clone(),
                advertised_host: host,
                advertised_port: port,
                sasl: spec.protocol.sasl(),
            });
            let secure = spec.protocol.tls();
            let authenticated = spec.protocol.sasl()
                || (secure && config.client_auth()? == crate::config::ClientAuth::Required);
            if !(bound.ip().is_loopback() || authenticated) {
                tracing::warn!(
                    listener = %spec.name, addr = %bound,
                    "LISTENING BEYOND LOOPBACK WITHOUT AUTHENTICATION: any host that reaches {bound} can read, write and delete every topic unless ACLs say otherwise; use ssl_client_auth=required on an SSL listener, listener_allowlists, and ACLs with allow_everyone_if_no_acl_found=false"
                );
            }
            listeners.push((l, info, bound, spec.allow.clone(), secure));
        }
        let addr = listeners[0].2;
        let listener_addrs = listeners
            .iter()
            .map(|(_, info, bound, _, _)| (info.name.clone(), *bound))
            .collect();
        crate::metrics::handle();
        let admin = crate::metrics::bind_admin(&config.admin_listen).await?;
        let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
        if let Some(a) = admin_addr {
            tracing::info!(admin = %a, "admin listener (/metrics, /health, /ready)");
        }
        tracing::info!(?config, "effective configuration");
        for (i, (_, info, bound, _, _)) in listeners.iter().enumerate() {
            let advertised = format!("{}:{}", info.advertised_host, info.advertised_port);
            if i == 0 {
                tracing::info!(addr = %bound, %advertised, listener = %info.name, %cluster_id, "listening");
            } else {
                tracing::info!(bound = %bound, %advertised, listener = %info.name, "also accepting");
            }
        }
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let groups = Arc::new(Coordinator::new(
            store.clone(),
            config.group_settings(),
            cancel.clone(),
            tasks.clone(),
        ));
        tasks.spawn(groups.clone().expire_offsets(Duration::from_secs(
            config.offsets_retention_minutes.saturating_mul(60),
        )));
        let archive = strata_storage::archive::Archive::open(&config.archive_location())
            .context("opening the archive")?;
        let acls = crate::acl::Acls::load(
            &store,
            &config.super_users,
            config.allow_everyone_if_no_acl_found,
        )
        .context("loading the ACLs")?;
        if !acls.is_empty() {
            tracing::info!(acls = acls.len(), "loaded ACLs");
        }
        let scram = crate::scram::ScramUsers::load(&store).context("loading SCRAM credentials")?;
        let mut ctx = Ctx::new(
            config,
            store,
            groups,
            cluster_id,
            cancel.clone(),
            archive,
            crate::handler::Access { acls, scram },
        );
        ctx.plain_users = plain_users;
        ctx.quotas = crate::quota::Quotas::load(
            &ctx.store,
            crate::quota::rate::Windows::from_config(&ctx.config),
        )
        .context("loading the client quotas")?;
        let ctx = Arc::new(ctx);
        ctx.tier
            .load_floors(&ctx.store)
            .context("loading the archive's DeleteRecords offsets")?;
        // Before any client is served: members of a group that was Stable heartbeat into
        // their stored generation, not into an unknown group.
        let loaded = ctx
            .groups
            .load()
            .await
            .context("loading the consumer groups")?;
        if loaded > 0 {
            tracing::info!(groups = loaded, "loaded consumer groups with members");
        }
        tasks.spawn(crate::retention::run(ctx.clone(), cancel.clone()));
        tasks.spawn(crate::cleaner::run(ctx.clone(), cancel.clone()));
        tasks.spawn(crate::archive::run(
            ctx.clone(),
            ctx.archive.clone(),
            cancel.clone(),
        ));
        // Connection limits count every listener's connections together.
        let limits = Arc::new(Limits {
            permits: Arc::new(Semaphore::new(ctx.config.max_connections)),
            per_ip: Arc::new(PerIp::new(
                ctx.config.connection_limits().unwrap_or_default(),
            )),
        });
        if let Some(tls) = &tls {
            tasks.spawn(tls.clone().watch(
                Duration::from_millis(ctx.config.ssl_reload_interval_ms),
                cancel.clone(),
            ));
        }
        for (listener, info, _, allow, secure) in listeners {
            let accepting = Accepting {
                listener,
                info,
                allow,
                tls: if secure { tls.clone() } else { None },
            };
            tasks.spawn(accept_loop(
                accepting,
                ctx.clone(),
                limits.clone(),
                cancel.clone(),
                tasks.clone(),
            ));
        }
        if let Some(admin) = admin {
            tasks.spawn(crate::metrics::serve_admin(
                admin,
                ctx.clone(),
                cancel.clone(),
            ));
        }
        ctx.counters
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(Broker {
            addr,
            listener_addrs,
            admin_addr,
            cancel,
            tasks,
            ctx,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every listener's name and bound address.
    pub fn listener_addrs(&self) -> &[(String, SocketAddr)] {
        &self.listener_addrs
    }

    /// Where the admin listener (`/metrics`) accepts, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// How many consumer-group actors are running (groups with members or work pending).
    pub fn live_group_actors(&self) -> usize {
        self.ctx.groups.live_actors()
    }

    /// What the archive connector has done since the broker started.
    pub fn archive_stats(&self) -> crate::archive_upload::ArchiveStatsSnapshot {
        self.ctx.archive_stats.snapshot()
    }

    /// How the storage's read cache has done since the broker started.
    pub fn read_cache_stats(&self) -> strata_storage::CacheStats {
        self.ctx.store.read_cache_stats()
    }

    /// Test hook: holds the storage's group-commit syncer until the value is dropped.
    #[doc(hidden)]
    pub fn hold_syncer(&self) -> strata_storage::SyncHold {
        self.ctx.store.hold_syncer()
    }

    /// Stops accepting, lets each connection finish the requests it has read, then syncs and
    /// closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let store = self.ctx.store.clone();
        drop(self.ctx);
        // Final sync; the database closes as the last reference (this one) goes.
        tokio::task::spawn_blocking(move || store.close()).await?;
        tracing::info!("shut down");
        Ok(())
    }
}

/// Connections the kernel may hold completed but not yet accepted. Under a connect storm
/// (thousands of consumers starting at once) a short queue overflows while the accept loop
/// shares the cores with the work those clients bring, and every dropped handshake costs
/// its client a 1 s SYN retransmit; Linux caps the value at net.core.somaxconn.
const LISTEN_BACKLOG: u32 = 8192;

/// Binds `addr` with SO_REUSEADDR (a restarted broker can listen again at once) and a long
/// accept queue.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn cluster_id(store: &Store) -> anyhow::Result<String> {
    if let Some(v) = store.get_kv(CLUSTER_ID_KEY)? {
        return Ok(String::from_utf8_lossy(&v).into_owned());
    }
    // Kafka cluster ids are 22-character URL-safe base64 UUIDs; any stable string works for
    // clients, so use the UUID's simple hex form cut to that length.
    let id: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(22)
        .collect();
    store.put_kv(CLUSTER_ID_KEY, id.as_bytes())?;
    Ok(id)
}

/// How long a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection limits all listeners share.
struct Limits {
    permits: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
}

/// One listener's socket and what its connections get: the address it advertises, the
/// sources it accepts, and TLS for an SSL listener.
struct Accepting {
    listener: TcpListener,
    info: Arc<Listener>,
    allow: Option<Vec<Cidr>>,
    tls: Option<Arc<crate::tls::Tls>>,
}

async fn accept_loop(
    accepting: Accepting,
    ctx: Arc<Ctx>,
    limits: Arc<Limits>,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let Accepting {
        listener,
        info,
        allow,
        tls,
    } = accepting;
    let (permits, per_ip) = (&limits.permits, &limits.per_ip);
    let name = info.name.clone();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(allow) = &allow {
            if !allow.iter().any(|c| c.contains(peer.ip())) {
                // Closed before a byte is read (dropping the stream closes it).
                ::metrics::counter!("strata_connections_rejected_total", "listener" => name.clone(), "reason" => "allowlist")
                    .increment(1);
                if let Some(suppressed) = ctx.noisy.allow(peer.ip()) {
                    tracing::warn!(%peer, listener = %name, suppressed, "connection from outside the listener's allowlist closed");
                }
                continue;
            }
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(suppressed) = ctx.noisy.allow(peer.ip()) {
                tracing::warn!(%peer, limit = ctx.config.max_connections, suppressed, "connection limit reached; closing new connection");
            }
            ::metrics::counter!("strata_connections_rejected_total", "listener" => name.clone(), "reason" => "max_connections")
                .increment(1);
            continue;
        };
        let Some(slot) = PerIp::admit(per_ip, peer.ip()) else {
            tracing::warn!(%peer, limit = per_ip.limits.limit(peer.ip()), "connection limit for this address reached (max_connections_per_ip); closing new connection");
            ::metrics::counter!("strata_connections_rejected_total", "listener" => name.clone(), "reason" => "max_connections_per_ip")
                .increment(1);
            continue;
        };
        ::metrics::counter!("strata_connections_accepted_total", "listener" => name.clone())
            .increment(1);
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        let info = info.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            ctx.counters.connections_open.fetch_add(1, Relaxed);
            match tls {
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    crate::connection::serve_tls(
                        ctx.clone(),
                        stream,
                        peer,
                        info,
                        acceptor,
                        TLS_HANDSHAKE_TIMEOUT,
                        cancel,
                    )
                    .await
                }
                None => crate::connection::serve(ctx.clone(), stream, peer, info, cancel).await,
            }
            ctx.counters.connections_open.fetch_sub(1, Relaxed);
            drop((permit, slot));
        });
    }
}

/// Connections held per address, against `max_connections_per_ip` and its overrides.
struct PerIp {
    limits: ConnectionLimits,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's place in [`PerIp`]; gives it back when dropped.
struct IpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn new(limits: ConnectionLimits) -> Self {
        PerIp {
            limits,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn admit(this: &Arc<PerIp>, ip: IpAddr) -> Option<IpSlot> {
        let mut held = this.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= this.limits.limit(ip) {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            owner: this.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}
