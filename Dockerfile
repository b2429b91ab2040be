FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
ENV GBP_STORAGE_DATA_DIR=/data
VOLUME /data
EXPOSE 5060/udp 5060/tcp 8080/tcp
ENTRYPOINT ["gbplatform"]
CMD ["run"]
