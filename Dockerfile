# callcatch daemon image. Build: docker build -t callcatch .
# Run next to Asterisk (see README): host network to reach AMI/ARI on 127.0.0.1, the
# configuration and the data folder as volumes, Asterisk's CDR folder read-only, and the
# GSM modem passed through with its group.
FROM python:3.11-slim-bookworm

RUN useradd --system --uid 10001 --gid dialout --home-dir /var/lib/callcatch callcatch \
    && mkdir -p /etc/callcatch /var/lib/callcatch \
    && chown callcatch:dialout /var/lib/callcatch

WORKDIR /opt/callcatch
COPY pyproject.toml README.md ./
COPY callcatch ./callcatch
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER callcatch
ENV CALLCATCH_CONFIG=/etc/callcatch/callcatch.toml
VOLUME ["/etc/callcatch", "/var/lib/callcatch"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["callcatch"]
CMD ["run"]
