"""Server TLS context: TLS 1.2+, optional client certificates (mutual TLS)."""

from __future__ import annotations

import ssl

from appliance.config import ConfigError, TlsSettings


def server_ssl_context(tls: TlsSettings) -> ssl.SSLContext | None:
    if tls.cert_file is None:
        if tls.client_ca_file or tls.require_client_cert:
            raise ConfigError("tls.client_ca_file / require_client_cert need tls.cert_file and tls.key_file")
        return None
    if tls.key_file is None:
        raise ConfigError("tls.cert_file is set but tls.key_file is not")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        if tls.client_ca_file is not None:
            context.load_verify_locations(cafile=str(tls.client_ca_file))
            context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
        elif tls.require_client_cert:
            raise ConfigError("tls.require_client_cert needs tls.client_ca_file")
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS setup failed: {exc}") from None
    return context
