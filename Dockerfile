FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends pari-gp \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY api api
COPY worker worker
COPY shared shared
COPY alembic alembic
# Editable, so the code runs from /app, where alembic.ini and alembic/ are (a plain
# install would run it from site-packages, where shared/admin/database.py cannot find them).
RUN pip install --no-cache-dir -e .

RUN useradd --create-home backscope
USER backscope
ENV BACKSCOPE_BIND=0.0.0.0:5000
EXPOSE 5000
CMD ["gunicorn", "--config", "python:api.gunicorn_conf", "api:create_app()"]
