"""Pull requests through GitHub's REST API, over the guarded HTTP client. The API base URL is the
credential's (GitHub Enterprise: "https://github.example.com/api/v3") or SPARKOPS_GITHUB_API_URL."""

import re

from django.conf import settings

from sparkops.lib import http

_REPOSITORY = re.compile(r"(?P<owner>[\w.-]+)/(?P<name>[\w.-]+?)(?:\.git)?/?$")


class PullRequestFailed(Exception):
    """GitHub did not open the pull request; the message says why, with GitHub's own words."""


def repository_of(url: str) -> str:
    """``owner/name`` from a repository URL: its last two path segments."""
    match = _REPOSITORY.search(url.split("?")[0].split("#")[0])
    if match is None:
        raise PullRequestFailed(f"Cannot tell the GitHub repository (owner/name) from {url!r}.")
    return f"{match['owner']}/{match['name']}"


def open_pull_request(
    *, api_url: str, token: str, repository: str, head: str, base: str, title: str, body: str
) -> dict:
    """Open the pull request; GitHub's answer ({"number", "html_url", ...})."""
    url = f"{(api_url or settings.SPARKOPS_GITHUB_API_URL).rstrip('/')}/repos/{repository}/pulls"
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = http.request(
            "POST", url, headers=headers, json={"title": title, "head": head, "base": base, "body": body}, timeout=30
        )
    except http.OutboundError as exc:
        raise PullRequestFailed(f"GitHub could not be reached: {exc}") from exc
    if response.status_code != 201:
        raise PullRequestFailed(f"GitHub answered {response.status_code}: {_reason(response)}")
    return response.json()


def _reason(response: http.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:500]
    details = [e.get("message") or e.get("code", "") for e in data.get("errors", []) if isinstance(e, dict)]
    return "; ".join(filter(None, [data.get("message", ""), *details]))[:500]
