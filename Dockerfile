# Writ: the production image, exactly the path CI tests (scripts/production-install-check.sh):
# the built output plus `npm ci --omit=dev`, run as a non-root user.
#
#   docker build -t writ .
#   docker run -e WRIT_DATABASE_URL=postgres://writ_app:…@db/writ -e WRIT_MIGRATION_DATABASE_URL=… \
#     -e WRIT_MASTER_KEY=… -e WRIT_HOST=0.0.0.0 -p 4000-4002:4000-4002 writ
#
# With an external database (production), build with --build-arg OMIT_OPTIONAL=1 to leave the
# embedded PostgreSQL out. Without WRIT_DATABASE_URL the embedded one runs in /data.

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY apps apps
COPY libs libs
COPY bench bench
COPY scripts scripts
COPY policies policies
RUN node scripts/build.js

FROM node:20-bookworm-slim
ARG OMIT_OPTIONAL=
ENV NODE_ENV=production WRIT_DATA_DIR=/data WRIT_HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev ${OMIT_OPTIONAL:+--omit=optional} --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist dist
COPY --from=build /src/policies/dist policies/dist
RUN useradd --system --uid 10001 --home-dir /data --create-home writ && chown writ /data
USER writ
VOLUME /data
EXPOSE 4000 4001 4002
# Exec form: node is PID 1 and handles SIGTERM itself (drains, stops PostgreSQL last, exits 0).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s CMD node -e "fetch('http://127.0.0.1:'+(process.env.WRIT_ADMIN_PORT||4002)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "dist/apps/launcher/src/main.js"]
