"""A recorded tenant served over HTTPS on 127.0.0.1: the identity platform's token endpoint,
Microsoft Graph and the Exchange / Security & Compliance admin API, read-only, with faults on
demand. The real SDKs talk to it over real sockets."""
