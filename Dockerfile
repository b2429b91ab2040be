FROM python:3.11-slim
WORKDIR /app
COPY . /app
# gcc builds the compiled RTP receive path (media/_fastpath.c); without it the install falls back to
# pure Python, which costs about half again as much CPU per stream (docs/performance.md).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
ENV GBP_STORAGE_DATA_DIR=/data
VOLUME /data
EXPOSE 5060/udp 5060/tcp 8080/tcp
ENTRYPOINT ["gbplatform"]
CMD ["run"]
