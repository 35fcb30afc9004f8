# A Node 20 image from Debian's own packages, for machines that reach no image registry but do
# reach Debian's mirror and the npm registry (`pnpm test:compose` builds it when
# `node:20-bookworm-slim` cannot be pulled, and passes it to infra/docker/Dockerfile as NODE_IMAGE):
#
#   docker build --network host -f infra/docker/base/node.Dockerfile --build-arg BASE=<debian trixie image> -t tollgate-base/node:20 infra/docker/base
#
# BASE is a Debian trixie root file system (`debootstrap --variant=minbase trixie`, then
# `docker import`); trixie's nodejs is 20.19. npm comes from the npm registry's own tarball,
# checked against its pinned sha512, as the official images bundle it: Debian's npm package
# would add webpack, babel, python and libssl-dev (314 MB image instead of about 170).
#
# `--secret id=ca_bundle,src=<PEM bundle>` (optional) adds the certificates of a bundle to the
# image's trust store: a machine whose HTTPS goes through an inspecting proxy has its CA only in
# its own bundle, and the build stages of infra/docker/Dockerfile reach the npm registry through it.
ARG BASE=debian:trixie-slim
FROM ${BASE}
ARG NPM_VERSION=10.9.9
ARG NPM_INTEGRITY=sha512-1g+6jLQvaIuB4zwvHL7yrXuXcWZwDsCtBX8bbWDqbvJSSr9nPiDDWTHNgwXR27iIcTTW7v3A57hDW9RYv2W4Yg==
RUN --mount=type=secret,id=ca_bundle,required=false \
    apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
 && if [ -s /run/secrets/ca_bundle ]; then \
      awk '/-----BEGIN CERTIFICATE-----/ { n++ } n { print > ("/usr/local/share/ca-certificates/extra-" n ".crt") }' /run/secrets/ca_bundle \
      && update-ca-certificates >/dev/null; \
    fi \
 && node -e " \
      const { createHash } = require('node:crypto'); \
      fetch('https://registry.npmjs.org/npm/-/npm-${NPM_VERSION}.tgz').then(async (r) => { \
        if (!r.ok) throw new Error('npm tarball: HTTP ' + r.status); \
        const buf = Buffer.from(await r.arrayBuffer()); \
        const got = 'sha512-' + createHash('sha512').update(buf).digest('base64'); \
        if (got !== process.env.NPM_INTEGRITY) throw new Error('npm tarball: integrity ' + got + ' is not ' + process.env.NPM_INTEGRITY); \
        require('node:fs').writeFileSync('/tmp/npm.tgz', buf); \
      }).catch((e) => { console.error(e.message); process.exit(1); });" \
 && mkdir -p /usr/local/lib/node_modules/npm \
 && tar -xzf /tmp/npm.tgz -C /usr/local/lib/node_modules/npm --strip-components=1 --no-same-owner \
 && rm /tmp/npm.tgz \
 && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
CMD ["node"]
