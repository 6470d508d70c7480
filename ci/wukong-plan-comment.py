#!/usr/bin/env python3
"""Post a `wukong plan -o markdown` as ONE pull-request (GitHub) or merge-request (GitLab)
comment, updated on every push instead of piling up (as Atlantis does), and set the job's
status from the plan.

    wukong plan fleets/prod --live snapshot.json -o markdown --out plan.json > plan.md
    wukong-plan-comment.py --markdown plan.md --plan plan.json --id fleets/prod --fail-on held

The comment carries a hidden marker, `<!-- wukong-plan: ID -->`; the script looks for a comment
with that marker (every page of the thread) and edits it, or creates one. `--id` tells several
fleets planned in one pull request apart. A comment longer than the forge accepts (GitHub
65,536 characters, GitLab 1,000,000) is cut at a line, with open code blocks and <details>
closed, and says so.

Exit status: 0; 1 when --fail-on says the plan should fail the job (`held`: the plan refuses or
blocks steps; `changes`: it has any step) -- after the comment is posted; 2 when the comment
cannot be posted (the error on stderr).

Where it posts, from the CI environment:
  GitHub Actions: GITHUB_API_URL, GITHUB_REPOSITORY, the pull request's number from
    GITHUB_EVENT_PATH (or --pr), the token from GITHUB_TOKEN (needs `pull-requests: write`).
  GitLab CI: CI_API_V4_URL, CI_PROJECT_ID, CI_MERGE_REQUEST_IID (or --pr), the token from
    WUKONG_GITLAB_TOKEN (a project access token with the `api` scope; CI_JOB_TOKEN cannot
    write notes), sent as PRIVATE-TOKEN.

Only Python 3's standard library; tested against fake GitHub and GitLab APIs
(tests/it/ci_comment.rs).
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

# Longest comment body each forge accepts, in characters.
LIMITS = {"github": 65536, "gitlab": 1000000}
# Comments read per page when looking for ours (the most both APIs give).
PER_PAGE = 100
# Most pages read: 10,000 comments is more than any pull request has.
MAX_PAGES = 100
# Seconds a request may take.
TIMEOUT = 30


class PostError(Exception):
    pass


def request(method, url, headers, body=None):
    data = None
    headers = dict(headers)
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as response:
            text = response.read().decode()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        raise PostError(f"{method} {url}: {e.code} {e.reason}: {detail}") from None
    except urllib.error.URLError as e:
        raise PostError(f"{method} {url}: {e.reason}") from None


class GitHub:
    name = "github"

    def __init__(self, pr):
        self.api = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
        self.repo = need("GITHUB_REPOSITORY")
        self.pr = pr or github_pr_number()
        token = need("GITHUB_TOKEN")
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "wukong-plan-comment",
        }

    def comments(self):
        for page in range(1, MAX_PAGES + 1):
            url = f"{self.api}/repos/{self.repo}/issues/{self.pr}/comments?per_page={PER_PAGE}&page={page}"
            batch = request("GET", url, self.headers) or []
            yield from ((c["id"], c.get("body") or "") for c in batch)
            if len(batch) < PER_PAGE:
                return

    def create(self, body):
        url = f"{self.api}/repos/{self.repo}/issues/{self.pr}/comments"
        return request("POST", url, self.headers, {"body": body})["id"]

    def update(self, comment_id, body):
        url = f"{self.api}/repos/{self.repo}/issues/comments/{comment_id}"
        request("PATCH", url, self.headers, {"body": body})


class GitLab:
    name = "gitlab"

    def __init__(self, pr):
        self.api = need("CI_API_V4_URL").rstrip("/")
        project = urllib.parse.quote(need("CI_PROJECT_ID"), safe="")
        self.base = f"{self.api}/projects/{project}/merge_requests/{pr or need('CI_MERGE_REQUEST_IID')}/notes"
        token = os.environ.get("WUKONG_GITLAB_TOKEN") or os.environ.get("GITLAB_TOKEN")
        if not token:
            raise PostError(
                "set WUKONG_GITLAB_TOKEN to a project access token with the api scope "
                "(CI_JOB_TOKEN cannot write merge request notes)"
            )
        self.headers = {"PRIVATE-TOKEN": token, "User-Agent": "wukong-plan-comment"}

    def comments(self):
        for page in range(1, MAX_PAGES + 1):
            url = f"{self.base}?per_page={PER_PAGE}&page={page}&sort=asc&order_by=created_at"
            batch = request("GET", url, self.headers) or []
            yield from ((n["id"], n.get("body") or "") for n in batch)
            if len(batch) < PER_PAGE:
                return

    def create(self, body):
        return request("POST", self.base, self.headers, {"body": body})["id"]

    def update(self, comment_id, body):
        request("PUT", f"{self.base}/{comment_id}", self.headers, {"body": body})


def need(name):
    value = os.environ.get(name)
    if not value:
        raise PostError(f"{name} is not set: is this a pull/merge request pipeline?")
    return value


def github_pr_number():
    path = os.environ.get("GITHUB_EVENT_PATH")
    if path and os.path.exists(path):
        with open(path) as f:
            event = json.load(f)
        number = (event.get("pull_request") or {}).get("number") or event.get("number")
        if number:
            return number
    raise PostError("no pull request number: pass --pr, or run on a pull_request event")


def marker(comment_id):
    # A comment id never contains "--" (it would end the HTML comment).
    return f"<!-- wukong-plan: {comment_id.replace('--', '-')} -->"


def fit(text, limit, note):
    """`text` cut at a line so that it and `note` fit in `limit` characters, with code
    blocks and <details> left open closed again."""
    if len(text) <= limit:
        return text
    room = limit - len(note) - 200
    cut = text[:room]
    cut = cut[: cut.rfind("\n") + 1] if "\n" in cut else cut
    closing = ""
    fence = None
    for line in cut.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            run = stripped[: len(stripped) - len(stripped.lstrip("`"))]
            if fence is None:
                fence = run
            elif run == fence and stripped == run:
                fence = None
    if fence:
        closing += f"\n{fence}\n"
    opened = cut.count("<details") - cut.count("</details>")
    closing += "\n</details>\n" * max(0, opened)
    return cut + closing + note


def body_of(args, forge):
    with open(args.markdown, encoding="utf-8") as f:
        plan = f.read()
    title = f"### Wukong plan for `{args.id}`" if args.id != "default" else "### Wukong plan"
    context = []
    sha = os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHORT_SHA") or os.environ.get("CI_COMMIT_SHA")
    if sha:
        context.append(f"commit {sha[:12]}")
    run = job_url()
    if run:
        context.append(f"[job log]({run})")
    head = f"{marker(args.id)}\n{title}\n"
    if context:
        head += f"<sub>{' · '.join(context)}</sub>\n"
    limit = args.max_chars or LIMITS[forge]
    note = (
        "\n\n> The plan was cut to fit the comment limit"
        + (f"; the whole plan is in the [job log]({run})." if run else ".")
        + "\n"
    )
    return head + "\n" + fit(plan, limit - len(head) - 1, note)


def job_url():
    if os.environ.get("GITHUB_RUN_ID") and os.environ.get("GITHUB_REPOSITORY"):
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{os.environ['GITHUB_REPOSITORY']}/actions/runs/{os.environ['GITHUB_RUN_ID']}"
    return os.environ.get("CI_JOB_URL")


def verdict(args):
    """1 when --fail-on says the plan fails the job, else 0; and a line saying why."""
    if args.fail_on == "none" or not args.plan:
        return 0, None
    with open(args.plan, encoding="utf-8") as f:
        summary = json.load(f).get("summary", {})
    held = summary.get("refused", 0) + summary.get("blocked", 0)
    steps = sum(v for v in summary.values() if isinstance(v, int))
    if args.fail_on == "held" and held:
        return 1, f"the plan refuses or blocks {held} step(s)"
    if args.fail_on == "changes" and steps:
        return 1, f"the plan has {steps} step(s)"
    return 0, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", required=True, help="the output of `wukong plan -o markdown`")
    parser.add_argument("--plan", help="the plan saved by `wukong plan --out` (for --fail-on)")
    parser.add_argument("--id", default="default", help="which fleet: one comment per id")
    parser.add_argument("--forge", choices=["auto", "github", "gitlab"], default="auto")
    parser.add_argument("--pr", help="the pull/merge request number (default: from the CI environment)")
    parser.add_argument("--fail-on", choices=["none", "held", "changes"], default="none")
    parser.add_argument("--max-chars", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    forge = args.forge
    if forge == "auto":
        forge = "github" if os.environ.get("GITHUB_ACTIONS") else "gitlab" if os.environ.get("GITLAB_CI") else None
        if forge is None:
            print("wukong-plan-comment: not on GitHub Actions or GitLab CI; pass --forge", file=sys.stderr)
            return 2
    try:
        status, why = verdict(args)
        client = GitHub(args.pr) if forge == "github" else GitLab(args.pr)
        body = body_of(args, forge)
        mark = marker(args.id)
        existing = next((cid for cid, text in client.comments() if mark in text), None)
        if existing is None:
            cid = client.create(body)
            print(f"wukong-plan-comment: created comment {cid}")
        else:
            client.update(existing, body)
            print(f"wukong-plan-comment: updated comment {existing}")
    except (PostError, OSError, ValueError, KeyError) as e:
        print(f"wukong-plan-comment: cannot post the plan: {e}", file=sys.stderr)
        return 2
    if why:
        print(f"wukong-plan-comment: failing the job: {why} (--fail-on {args.fail_on})", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
