# A Redis 7 image from Debian's own packages, for machines that reach no image registry
# (`pnpm test:compose` builds it when `redis:7` cannot be pulled, and passes it to
# docker-compose.yml as REDIS_IMAGE):
#
#   docker build --network host -f infra/docker/base/redis.Dockerfile --build-arg BASE=<debian:bookworm rootfs> -t tollgate-base/redis:7 .
#
# BASE is a Debian bookworm root file system (`debootstrap --variant=minbase bookworm`, then
# `docker import`): bookworm's redis-server is 7.0, trixie's is 8. It behaves like the official
# image where compose and the manifests rely on it: `redis-server ...` as the command, uid 999,
# /data as the working directory, and no protected mode (the official build turns it off; other
# containers reach Redis over the compose network, without a password).
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# The official image's fixed ids, which infra/k8s/redis.yaml runs as; made before the package
# would make the user with whatever id is free.
RUN groupadd --system --gid 999 redis \
 && useradd --system --uid 999 --gid redis --home-dir /var/lib/redis --no-create-home --shell /usr/sbin/nologin redis \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
 && mkdir -p /data && chown redis:redis /data \
 && redis-server --version
COPY redis-entrypoint.sh /usr/local/bin/redis-entrypoint.sh
WORKDIR /data
VOLUME /data
USER 999:999
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/redis-entrypoint.sh"]
CMD ["redis-server"]
