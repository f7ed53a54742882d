//! nginx terminating TLS in front of the plain relay: what an operator would run instead of
//! the relay's own TLS, for `load --tls` and `idle --tls --nginx` to compare with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;

/// Writes an nginx configuration into `dir` (which holds `cert.pem` and `key.pem`) that
/// serves TLS on `listen` and passes WebSockets on to the relay at `relay`, as a
/// deployment guide would: TLS 1.2 and 1.3 (nginx 1.22 leaves 1.3 off unless told), HTTP/1.1
/// to the relay, the upgrade headers passed, no access
/// log, one worker per core. Returns its path.
pub fn config(dir: &Path, listen: SocketAddr, relay: SocketAddr) -> Result<PathBuf> {
    let dir_text = dir.display();
    let text = format!(
        r#"daemon off;
worker_processes auto;
worker_rlimit_nofile 20000;
pid {dir_text}/nginx.pid;
error_log {dir_text}/nginx-error.log warn;
events {{
    worker_connections 10000;
}}
http {{
    access_log off;
    client_body_temp_path {dir_text}/client-body;
    proxy_temp_path {dir_text}/proxy;
    fastcgi_temp_path {dir_text}/fastcgi;
    uwsgi_temp_path {dir_text}/uwsgi;
    scgi_temp_path {dir_text}/scgi;
    server {{
        listen {listen} ssl;
        ssl_certificate {dir_text}/cert.pem;
        ssl_certificate_key {dir_text}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://{relay};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, text)?;
    Ok(path)
}
