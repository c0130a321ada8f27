FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=sparkops.settings.production
WORKDIR /app
RUN useradd --create-home --uid 1000 sparkops
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# Static files are collected into the image and served by whitenoise; the values below exist only
# so production settings load during the build.
RUN DJANGO_SECRET_KEY=build JWT_SIGNING_KEY=build DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    REDIS_URL=redis://localhost:6379/0 ALLOWED_HOSTS=localhost SPARKOPS_ENCRYPTION_KEYS=build SPARKOPS_VAR_DIR=/app/var \
    python manage.py collectstatic --noinput \
 && chown -R sparkops /app/var
USER sparkops
EXPOSE 8000
CMD ["gunicorn", "sparkops.asgi:application", "-k", "uvicorn_worker.UvicornWorker", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
