# Minimal image: web (gunicorn) by default; run the worker with `python manage.py qcluster`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TUNIX_VAR_DIR=/var/lib/tunix-rt
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput
RUN useradd --system --home /app tunix && mkdir -p "$TUNIX_VAR_DIR" && chown tunix "$TUNIX_VAR_DIR"
USER tunix
EXPOSE 8000
CMD ["gunicorn", "-c", "python:tunix_rt.gunicorn_conf", "tunix_rt.wsgi"]
