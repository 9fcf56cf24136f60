//! An S3-compatible server inside the test process (the `s3s-fs` crate: buckets and objects
//! as directories and files under a root), on 127.0.0.1 with signed requests checked against
//! one key pair. It runs on its own runtime so sync tests can use it; `stop` closes every
//! connection (the store is really down), `restart` serves the same directory on the same
//! port again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// The key pair the server accepts.
pub const ACCESS_KEY: &str = "strata-test";
pub const SECRET_KEY: &str = "strata-test-secret";
/// Any region: the server does not check it, the client signs with it.
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    root: PathBuf,
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    requests: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
}

/// The S3 service, counting the requests it gets and answering each after a delay.
#[derive(Clone)]
struct Counted {
    inner: s3s::service::S3Service,
    requests: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
}

type Request = hyper::Request<hyper::body::Incoming>;

impl hyper::service::Service<Request> for Counted {
    type Response = <s3s::service::S3Service as hyper::service::Service<Request>>::Response;
    type Error = <s3s::service::S3Service as hyper::service::Service<Request>>::Error;
    type Future = <s3s::service::S3Service as hyper::service::Service<Request>>::Future;

    fn call(&self, req: Request) -> Self::Future {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let answer = hyper::service::Service::call(&self.inner, req);
        match self.delay_ms.load(Ordering::Relaxed) {
            0 => answer,
            ms => Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                answer.await
            }),
        }
    }
}

impl S3Server {
    /// Serves `root` (created if missing) on a free port, with `bucket` created.
    pub fn start(root: &Path, bucket: &str) -> Result<S3Server> {
        std::fs::create_dir_all(root.join(bucket)).context("create the bucket directory")?;
        let mut server = S3Server {
            root: root.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            runtime: None,
            requests: Arc::default(),
            delay_ms: Arc::default(),
        };
        server.serve()?;
        Ok(server)
    }

    fn serve(&mut self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-server")
            .enable_all()
            .build()?;
        let fs = s3s_fs::FileSystem::new(&self.root).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            Counted {
                inner: b.build(),
                requests: self.requests.clone(),
                delay_ms: self.delay_ms.clone(),
            }
        };
        // After a stop, the old listener closes in the background: retry its port briefly.
        let addr = self.addr;
        let listener = crate::wait_until(
            "the S3 server's port",
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis(50),
            || {
                runtime
                    .block_on(tokio::net::TcpListener::bind(addr))
                    .map_err(|e| e.to_string())
            },
        )?;
        self.addr = listener.local_addr()?;
        runtime.spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        self.runtime = Some(runtime);
        Ok(())
    }

    /// Stops serving: the listener and every connection close.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Serves the same directory on the same port again.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.serve()
    }

    /// Makes the server wait this long before handling each request (a slow store).
    pub fn set_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Requests received since the server was first started.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where `bucket`'s objects are kept (one file per object, keys as paths).
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    /// The standard `AWS_*` variables that point a broker at this server with `secret`
    /// (pass [`SECRET_KEY`] to be let in).
    pub fn env(&self, secret: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), secret.into()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }

    /// The same as object_store options, for `Archive::open_with` in the test process.
    pub fn archive(&self, url: &str) -> Result<strata_storage::archive::Archive> {
        let env = self.env(SECRET_KEY);
        // object_store's option names are the variables' names in lower case.
        let keys: Vec<String> = env.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
        let options: Vec<(&str, &str)> = keys
            .iter()
            .zip(&env)
            .map(|(k, (_, v))| (k.as_str(), v.as_str()))
            .collect();
        Ok(strata_storage::archive::Archive::open_with(url, &options)?)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
