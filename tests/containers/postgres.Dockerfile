# A stand-in for the official postgres image where no registry is reachable (the tests): Debian's
# PostgreSQL 15 behind the same contract (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, PGDATA,
# /docker-entrypoint-initdb.d/*.sql on first start, listening on all addresses).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends postgresql-15 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
RUN mkdir -p "$PGDATA" /docker-entrypoint-initdb.d && chown -R postgres "$PGDATA"
USER postgres
EXPOSE 5432
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
