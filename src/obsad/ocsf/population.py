"""The simulated organisation behind the OCSF events: people, machines, services and the outside world.

A mid-sized European online retailer ("example.com") with offices in Berlin, London, Amsterdam, Lisbon
and New York. Everything the event generators need to stay *consistent* lives here, so that the same
user always logs on from the same office IP with the same browser, the same laptop resolves the same
domains, and each HTTP endpoint keeps its own latency and response-size profile:

* **users** with a role (engineer, admin, finance, sales, support, hr, exec, service account), a home
  office or a remote home city (city, country, lat/long, time zone), a public IP (office egress or a
  residential address), an internal IP, a laptop, a browser user agent and an activity level
  (lognormal: a few people produce most of the events);
* **hosts**: one laptop per person plus the servers (apps, databases, domain controllers, resolvers,
  CI runners, bastion, backup);
* **services** and their **HTTP endpoints**, each with a lognormal latency (median, sigma: heavy
  tails) and response size, error rates and whether it is reachable from the internet;
* the **outside world**: customer IPs geolocated to cities, SaaS destinations, DNS domains.

Nothing here is random at import time: :func:`build_population` draws everything from the generator
it is given, so a seed fixes the whole organisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ORG_DOMAIN = "example.com"
CORP_DOMAIN = "corp.example.com"
AWS_ACCOUNTS = ("418295730164", "730552918406", "905128347761")  # prod, staging, shared-services
AWS_REGIONS = ("eu-central-1", "eu-west-1", "us-east-1")

# --------------------------------------------------------------------------------------------------
# Places. (country ISO-3166 alpha-2, city, lat, long, UTC offset in whole hours for the rhythm)
# --------------------------------------------------------------------------------------------------
CITIES: tuple[tuple[str, str, float, float, int], ...] = (
    ("DE", "Berlin", 52.5200, 13.4050, 1),
    ("DE", "Munich", 48.1372, 11.5755, 1),
    ("DE", "Hamburg", 53.5511, 9.9937, 1),
    ("DE", "Frankfurt am Main", 50.1109, 8.6821, 1),
    ("DE", "Leipzig", 51.3397, 12.3731, 1),
    ("GB", "London", 51.5072, -0.1276, 0),
    ("GB", "Manchester", 53.4808, -2.2426, 0),
    ("GB", "Bristol", 51.4545, -2.5879, 0),
    ("NL", "Amsterdam", 52.3676, 4.9041, 1),
    ("NL", "Utrecht", 52.0907, 5.1214, 1),
    ("PT", "Lisbon", 38.7223, -9.1393, 0),
    ("PT", "Porto", 41.1579, -8.6291, 0),
    ("US", "New York", 40.7128, -74.0060, -5),
    ("US", "Jersey City", 40.7178, -74.0431, -5),
    ("US", "Boston", 42.3601, -71.0589, -5),
    ("US", "Ashburn", 39.0438, -77.4874, -5),
    ("US", "Chicago", 41.8781, -87.6298, -6),
    ("US", "San Jose", 37.3382, -121.8863, -8),
    ("US", "Seattle", 47.6062, -122.3321, -8),
    ("FR", "Paris", 48.8566, 2.3522, 1),
    ("FR", "Lyon", 45.7640, 4.8357, 1),
    ("ES", "Madrid", 40.4168, -3.7038, 1),
    ("ES", "Barcelona", 41.3874, 2.1686, 1),
    ("IT", "Milan", 45.4642, 9.1900, 1),
    ("IT", "Rome", 41.9028, 12.4964, 1),
    ("AT", "Vienna", 48.2082, 16.3738, 1),
    ("CH", "Zurich", 47.3769, 8.5417, 1),
    ("PL", "Warsaw", 52.2297, 21.0122, 1),
    ("SE", "Stockholm", 59.3293, 18.0686, 1),
    ("DK", "Copenhagen", 55.6761, 12.5683, 1),
    ("BE", "Brussels", 50.8503, 4.3517, 1),
    ("IE", "Dublin", 53.3498, -6.2603, 0),
    ("CZ", "Prague", 50.0755, 14.4378, 1),
    ("CA", "Toronto", 43.6532, -79.3832, -5),
    ("BR", "Sao Paulo", -23.5505, -46.6333, -3),
    ("SG", "Singapore", 1.3521, 103.8198, 8),
    ("JP", "Tokyo", 35.6762, 139.6503, 9),
    ("IN", "Mumbai", 19.0760, 72.8777, 5),
    ("AU", "Sydney", -33.8688, 151.2093, 11),
    ("RU", "Moscow", 55.7558, 37.6173, 3),
    ("CN", "Shanghai", 31.2304, 121.4737, 8),
    ("VN", "Hanoi", 21.0278, 105.8342, 7),
    ("NG", "Lagos", 6.5244, 3.3792, 1),
    ("ZA", "Johannesburg", -26.2041, 28.0473, 2),
    ("KR", "Seoul", 37.5665, 126.9780, 9),
    ("TR", "Istanbul", 41.0082, 28.9784, 3),
    ("MX", "Mexico City", 19.4326, -99.1332, -6),
    ("AR", "Buenos Aires", -34.6037, -58.3816, -3),
    ("ID", "Jakarta", -6.2088, 106.8456, 7),
)
CITY_INDEX = {c[1]: i for i, c in enumerate(CITIES)}

#: Countries far from every office: where an "impossible" logon or an attacker comes from.
FAR_COUNTRIES = ("BR", "SG", "JP", "AU", "VN", "NG", "ID", "AR", "KR", "ZA", "MX", "IN")

# (office name, city, share of staff, egress /28 inside 192.0.2.0/24, internal second octet)
OFFICES = (
    ("BER", "Berlin", 0.40, 16, 10),
    ("LON", "London", 0.20, 32, 11),
    ("AMS", "Amsterdam", 0.15, 48, 12),
    ("LIS", "Lisbon", 0.10, 64, 13),
    ("NYC", "New York", 0.15, 80, 14),
)
#: Cities remote staff live in, per office country.
REMOTE_CITIES = {
    "DE": ("Berlin", "Munich", "Hamburg", "Leipzig", "Frankfurt am Main"),
    "GB": ("London", "Manchester", "Bristol"),
    "NL": ("Amsterdam", "Utrecht"),
    "PT": ("Lisbon", "Porto"),
    "US": ("New York", "Jersey City", "Boston"),
}

# Customer traffic on the public edge, by city weight (Europe-heavy shop with some US and world).
CUSTOMER_CITY_WEIGHTS = {
    "Berlin": 9, "Munich": 7, "Hamburg": 6, "Frankfurt am Main": 5, "Leipzig": 3, "London": 7,
    "Manchester": 3, "Bristol": 2, "Amsterdam": 5, "Utrecht": 2, "Lisbon": 3, "Porto": 2,
    "New York": 4, "Boston": 2, "Chicago": 2, "Seattle": 1, "San Jose": 1, "Ashburn": 1.5,
    "Paris": 5, "Lyon": 2, "Madrid": 3, "Barcelona": 2, "Milan": 2, "Rome": 2, "Vienna": 3,
    "Zurich": 3, "Warsaw": 3, "Stockholm": 2, "Copenhagen": 2, "Brussels": 2, "Dublin": 1.5,
    "Prague": 1.5, "Toronto": 1, "Sao Paulo": 0.4, "Singapore": 0.4, "Tokyo": 0.3, "Mumbai": 0.4,
    "Sydney": 0.2, "Istanbul": 0.5, "Mexico City": 0.2, "Seoul": 0.2,
}
# Where SaaS / CDN / cloud endpoints sit.
SAAS_CITY_WEIGHTS = {
    "Frankfurt am Main": 8, "Dublin": 6, "Amsterdam": 5, "Ashburn": 7, "San Jose": 3, "Seattle": 3,
    "London": 3, "Paris": 1, "Stockholm": 1, "Chicago": 1, "Zurich": 0.5,
}

# --------------------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------------------
FIRST_NAMES = (
    "anna", "lukas", "sofia", "jonas", "mia", "leon", "emma", "felix", "lea", "paul", "hannah", "noah",
    "olivia", "james", "amelia", "oliver", "isla", "harry", "chloe", "george", "daan", "sanne", "bram",
    "fleur", "joao", "beatriz", "tiago", "ines", "rui", "marta", "michael", "jennifer", "david", "sarah",
    "daniel", "priya", "arjun", "mei", "wei", "yuki", "kenji", "fatima", "omar", "aisha", "karim",
    "elena", "marco", "giulia", "pierre", "camille", "lucas", "zofia", "jakub", "ingrid", "erik",
    "nina", "tobias", "julia", "samuel", "grace", "ahmed", "leila", "diego", "lucia", "ana", "carlos",
)
LAST_NAMES = (
    "mueller", "schmidt", "schneider", "fischer", "weber", "meyer", "wagner", "becker", "hoffmann",
    "schulz", "smith", "jones", "taylor", "brown", "wilson", "evans", "thomas", "johnson", "roberts",
    "devries", "jansen", "bakker", "visser", "smit", "silva", "santos", "ferreira", "pereira", "costa",
    "oliveira", "miller", "davis", "garcia", "rodriguez", "martinez", "patel", "sharma", "chen",
    "wang", "tanaka", "sato", "khan", "haddad", "rossi", "russo", "bernard", "dubois", "nowak",
    "kowalski", "lindqvist", "hansen", "novak", "horvat", "kim", "park", "nguyen", "okafor", "ali",
    "fernandez", "lopez", "moreau", "keller", "brandt", "vogel", "koch", "richter",
)

#: role -> (share of staff, rhythm profile, OCSF user.type_id, laptop prefix, uses the cloud API)
ROLES = {
    "engineer": (0.32, "engineer", 1, "ENG", True),
    "admin": (0.04, "engineer", 2, "ITA", True),
    "finance": (0.10, "office", 1, "FIN", True),
    "sales": (0.20, "office", 1, "SAL", False),
    "support": (0.17, "support", 1, "SUP", False),
    "hr": (0.05, "office", 1, "HRS", False),
    "exec": (0.04, "office", 1, "EXE", False),
}
ROLE_NAMES = tuple(ROLES) + ("service",)

#: Service accounts: name, rhythm profile (all UTC), the SDK they call the cloud with, cloud API share
SERVICE_ACCOUNTS = (
    ("svc-ci-deploy", "batch_day", "terraform", 1.5),
    ("svc-backup", "nightly", "cli", 1.0),
    ("svc-etl", "nightly", "boto3", 1.6),
    ("svc-monitoring", "flat", "gosdk", 2.5),
    ("svc-reporting", "batch_day", "boto3", 0.8),
    ("svc-orders-app", "flat", "gosdk", 1.2),
    ("svc-payments-app", "flat", "gosdk", 0.6),
    ("svc-log-shipper", "flat", "gosdk", 0.9),
    ("svc-terraform", "batch_day", "terraform", 0.7),
    ("svc-jira-sync", "flat", "boto3", 0.3),
    ("svc-ldap-sync", "flat", None, 0.0),
    ("svc-scanner", "nightly", "cli", 0.4),
)

CHROME_VERSIONS = ("120.0.6099.224", "121.0.6167.185", "122.0.6261.112", "122.0.6261.129")
BROWSER_TEMPLATES = {
    "win": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{cv} Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{cv} Safari/537.36 Edg/{cv}",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{fv}.0) Gecko/20100101 Firefox/{fv}.0",
    ),
    "mac": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{cv} Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{sv} Safari/605.1.15",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.3; rv:{fv}.0) Gecko/20100101 Firefox/{fv}.0",
    ),
    "linux": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{cv} Safari/537.36",
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:{fv}.0) Gecko/20100101 Firefox/{fv}.0",
    ),
}
MOBILE_UAS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.64 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.6167.178 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.90 Mobile Safari/537.36",
)
SDK_UAS = {
    "cli": "aws-cli/2.15.{a} Python/3.11.{b} Linux/6.5.0-1014-aws exe/x86_64.ubuntu.22 prompt/off",
    "boto3": "Boto3/1.34.{a} md/Botocore#1.34.{a} ua/2.0 os/linux#6.1.0 md/arch#x86_64 lang/python#3.11.{b}",
    "gosdk": "aws-sdk-go-v2/1.25.{a} os/linux lang/go#1.22.{b} md/GOOS#linux md/GOARCH#amd64",
    "terraform": "APN/1.0 HashiCorp/1.0 Terraform/1.7.{b} (+https://www.terraform.io) terraform-provider-aws/5.38.{a}",
}
CONSOLE_UA = "AWS Internal"
SERVICE_HTTP_UAS = (
    "Go-http-client/1.1", "Go-http-client/2.0", "okhttp/4.12.0", "python-requests/2.31.0",
    "Apache-HttpClient/4.5.14 (Java/17.0.10)",
)
BOT_UAS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 zgrab/0.x",
    "curl/8.4.0",
    "Mozilla/5.0 (Windows NT 6.1; Win64; x64; rv:47.0) Gecko/20100101 Firefox/47.0",
)

# --------------------------------------------------------------------------------------------------
# Services and HTTP endpoints
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One HTTP route of a service and its behaviour.

    ``path`` is a template: ``{id}`` (5-6 digit integer), ``{sku}``, ``{uuid}``, ``{q}`` are filled per
    request. Latency and size are lognormal: ``latency_ms`` is the median, ``latency_sigma`` the log
    spread (0.5 = tight, 1.2 = heavy tail). ``err4``/``err5`` are the normal error rates.
    """

    service: str
    method: str
    path: str
    weight: float
    latency_ms: float
    latency_sigma: float
    size_bytes: float
    size_sigma: float
    err4: float = 0.01
    err5: float = 0.002
    content_type: str = "application/json"
    edge: bool = False  # reachable from the internet through the edge proxy
    mesh: bool = True  # called by other services inside the cluster
    query: str | None = None  # query-string template, present on some requests


ENDPOINTS: tuple[Endpoint, ...] = (
    # storefront (HTML, internet-facing)
    Endpoint("storefront", "GET", "/", 6, 85, 0.5, 48_000, 0.3, 0.002, 0.001, "text/html", True, False),
    Endpoint("storefront", "GET", "/products/{sku}", 14, 120, 0.6, 62_000, 0.4, 0.02, 0.001, "text/html", True, False),
    Endpoint("storefront", "GET", "/category/{cat}", 5, 140, 0.6, 71_000, 0.4, 0.01, 0.001, "text/html", True, False, "page={page}"),
    Endpoint("storefront", "GET", "/cart", 4, 95, 0.5, 23_000, 0.3, 0.003, 0.001, "text/html", True, False),
    Endpoint("storefront", "POST", "/checkout", 1.2, 420, 0.7, 4_100, 0.3, 0.03, 0.004, "text/html", True, False),
    Endpoint("storefront", "GET", "/static/js/app.{hash}.js", 8, 12, 0.8, 310_000, 0.1, 0.001, 0.0002, "application/javascript", True, False),
    # orders API
    Endpoint("orders", "GET", "/api/orders/{id}", 6, 45, 0.6, 2_300, 0.5, 0.02, 0.002, edge=True),
    Endpoint("orders", "GET", "/api/orders/{id}/items", 4, 60, 0.7, 5_400, 0.7, 0.01, 0.002, edge=True),
    Endpoint("orders", "GET", "/api/orders", 2.5, 180, 0.8, 18_000, 0.9, 0.01, 0.003, edge=True, query="customer={id}&page={page}"),
    Endpoint("orders", "POST", "/api/orders", 1.5, 240, 0.6, 1_900, 0.3, 0.04, 0.004, edge=True),
    Endpoint("orders", "PUT", "/api/orders/{id}/status", 0.8, 90, 0.5, 600, 0.3, 0.02, 0.003),
    # payments
    Endpoint("payments", "POST", "/api/payments", 1.3, 650, 0.6, 1_200, 0.3, 0.05, 0.006),
    Endpoint("payments", "GET", "/api/payments/{uuid}", 1.5, 55, 0.5, 900, 0.3, 0.01, 0.002),
    Endpoint("payments", "POST", "/api/payments/{uuid}/refund", 0.15, 900, 0.6, 1_000, 0.3, 0.05, 0.01),
    # inventory
    Endpoint("inventory", "GET", "/api/inventory/{sku}", 5, 22, 0.45, 700, 0.3, 0.01, 0.001),
    Endpoint("inventory", "PUT", "/api/inventory/{sku}", 1.0, 48, 0.5, 450, 0.2, 0.02, 0.002),
    Endpoint("inventory", "GET", "/api/inventory/reservations/{id}", 1.5, 30, 0.5, 1_100, 0.4, 0.03, 0.001),
    # catalog
    Endpoint("catalog", "GET", "/api/catalog/products/{id}", 7, 35, 0.5, 3_800, 0.5, 0.02, 0.001, edge=True),
    Endpoint("catalog", "GET", "/api/catalog/categories/{cat}/products", 3, 95, 0.6, 26_000, 0.7, 0.005, 0.001, edge=True, query="limit=48&offset={off}"),
    # search
    Endpoint("search", "GET", "/api/search", 6, 140, 0.8, 14_000, 0.8, 0.005, 0.003, edge=True, query="q={q}&page={page}"),
    # auth API
    Endpoint("auth-api", "POST", "/oauth/token", 3, 75, 0.5, 1_500, 0.1, 0.06, 0.002, edge=True),
    Endpoint("auth-api", "GET", "/oauth/userinfo", 2, 25, 0.5, 600, 0.2, 0.03, 0.001, edge=True),
    # reporting (internal, slow, heavy tail up to the 30 s ceiling)
    Endpoint("reporting", "GET", "/api/reports/{id}", 0.6, 900, 1.1, 45_000, 1.0, 0.01, 0.01, mesh=True),
    Endpoint("reporting", "POST", "/api/reports/{id}/export", 0.6, 7_500, 1.1, 2_400_000, 1.2, 0.01, 0.02, "text/csv"),
    # notifications
    Endpoint("notifications", "POST", "/api/notify/email", 1.2, 210, 0.7, 300, 0.2, 0.01, 0.005),
    Endpoint("notifications", "POST", "/api/notify/sms", 0.3, 380, 0.8, 300, 0.2, 0.02, 0.008),
)

#: service -> (edge hostname or None, internal hostname, port, server name prefix)
SERVICES = {
    "storefront": ("shop.example.com", "storefront.prod.svc.cluster.local", 8080, "app-storefront"),
    "orders": ("api.example.com", "orders.prod.svc.cluster.local", 8080, "app-orders"),
    "payments": (None, "payments.prod.svc.cluster.local", 8443, "app-payments"),
    "inventory": (None, "inventory.prod.svc.cluster.local", 8080, "app-inventory"),
    "catalog": ("api.example.com", "catalog.prod.svc.cluster.local", 8080, "app-catalog"),
    "search": ("api.example.com", "search.prod.svc.cluster.local", 8080, "app-search"),
    "auth-api": ("auth.example.com", "auth-api.prod.svc.cluster.local", 8080, "app-auth"),
    "reporting": (None, "reporting.prod.svc.cluster.local", 8080, "app-reporting"),
    "notifications": (None, "notifications.prod.svc.cluster.local", 8080, "app-notify"),
}
SERVICE_NAMES = tuple(SERVICES)

#: Servers: (hostname prefix, count, role, OS, listening ports)
SERVERS = (
    ("edge-proxy", 2, "edge", "Ubuntu 22.04.4 LTS", (443, 80)),
    ("app-storefront", 3, "app", "Ubuntu 22.04.4 LTS", (8080,)),
    ("app-orders", 3, "app", "Ubuntu 22.04.4 LTS", (8080,)),
    ("app-payments", 2, "app", "Ubuntu 22.04.4 LTS", (8443,)),
    ("app-inventory", 2, "app", "Ubuntu 22.04.4 LTS", (8080,)),
    ("app-catalog", 2, "app", "Ubuntu 22.04.4 LTS", (8080,)),
    ("app-search", 2, "app", "Ubuntu 22.04.4 LTS", (8080, 9200)),
    ("app-auth", 2, "app", "Ubuntu 22.04.4 LTS", (8080,)),
    ("app-reporting", 1, "app", "Ubuntu 22.04.4 LTS", (8080,)),
    ("app-notify", 1, "app", "Ubuntu 22.04.4 LTS", (8080,)),
    ("db-orders", 2, "db", "Ubuntu 22.04.4 LTS", (5432,)),
    ("db-payments", 1, "db", "Ubuntu 22.04.4 LTS", (5432,)),
    ("cache", 2, "db", "Amazon Linux 2023", (6379,)),
    ("dc", 2, "dc", "Windows Server 2022", (88, 389, 445, 636, 3268)),
    ("fs", 1, "fs", "Windows Server 2022", (445,)),
    ("dns", 2, "dns", "Ubuntu 22.04.4 LTS", (53,)),
    ("ci-runner", 3, "ci", "Ubuntu 22.04.4 LTS", (22,)),
    ("bastion", 1, "bastion", "Amazon Linux 2023", (22,)),
    ("backup", 1, "backup", "Ubuntu 22.04.4 LTS", (22, 873)),
    ("intranet", 1, "web", "Ubuntu 22.04.4 LTS", (443,)),
    ("jira", 1, "web", "Ubuntu 22.04.4 LTS", (443,)),
    ("mail-relay", 1, "mail", "Ubuntu 22.04.4 LTS", (25, 587)),
)

#: Cloud applications people sign on to through the identity provider (name, weight, protocol id)
SSO_APPS = (
    ("office365", 10, 5), ("slack", 8, 5), ("jira", 5, 5), ("github", 3, 5), ("salesforce", 3, 5),
    ("workday", 1.2, 5), ("aws-console", 1.5, 5), ("zoom", 2, 4), ("netsuite", 1.0, 5), ("vpn", 2.5, 10),
)
#: apps only some roles sign on to
SSO_APP_ROLES = {
    "github": ("engineer", "admin"), "aws-console": ("engineer", "admin", "finance"),
    "salesforce": ("sales", "exec", "support"), "netsuite": ("finance", "exec"),
    "workday": None, "jira": ("engineer", "admin", "support"),
}

# DNS: domains people and servers resolve (name, weight for laptops, weight for servers, record type)
DNS_DOMAINS = (
    ("outlook.office365.com", 9, 0, "A"), ("login.microsoftonline.com", 7, 0, "A"),
    ("teams.microsoft.com", 6, 0, "A"), ("www.google.com", 6, 0.2, "A"), ("slack.com", 5, 0, "A"),
    ("wss-primary.slack.com", 3, 0, "A"), ("github.com", 3, 0.5, "A"), ("api.github.com", 2, 1.2, "A"),
    ("zoom.us", 2, 0, "A"), ("update.googleapis.com", 2, 0, "A"), ("fonts.gstatic.com", 2.5, 0, "A"),
    ("clients4.google.com", 2, 0, "A"), ("www.example.com", 2, 0, "A"), ("shop.example.com", 1.5, 0, "A"),
    ("intranet.corp.example.com", 3, 0, "A"), ("jira.corp.example.com", 3, 0, "A"),
    ("fs-01.corp.example.com", 1.5, 0, "A"), ("example.okta.com", 3, 0, "A"),
    ("_ldap._tcp.dc._msdcs.corp.example.com", 1.5, 0, "SRV"), ("wpad.corp.example.com", 0.6, 0, "A"),
    ("ocsp.digicert.com", 1.5, 0.8, "A"), ("s3.eu-central-1.amazonaws.com", 1, 5, "A"),
    ("sts.amazonaws.com", 0.3, 3, "A"), ("dynamodb.eu-central-1.amazonaws.com", 0, 2, "A"),
    ("api.stripe.com", 0, 1.5, "A"), ("smtp.sendgrid.net", 0, 1, "A"), ("registry-1.docker.io", 0.3, 1.5, "A"),
    ("ntp.ubuntu.com", 0, 1, "A"), ("security.ubuntu.com", 0, 0.8, "A"), ("pypi.org", 0.5, 1.2, "A"),
    ("files.pythonhosted.org", 0.4, 1, "A"), ("db-orders-01.corp.example.com", 0, 3, "A"),
    ("cache-01.corp.example.com", 0, 2.5, "A"), ("logs.eu-central-1.amazonaws.com", 0, 2, "A"),
    ("monitoring.eu-central-1.amazonaws.com", 0, 1.5, "A"), ("_dmarc.example.com", 0, 0.1, "TXT"),
    ("example.com", 0.1, 0.15, "TXT"), ("_spf.google.com", 0, 0.1, "TXT"),
)
#: short random-looking CDN names are normal (cloudfront, akamai) -> entropy alone is not an alarm
CDN_ZONES = ("cloudfront.net", "akamaized.net", "azureedge.net", "fastly.net")


# --------------------------------------------------------------------------------------------------
# The population
# --------------------------------------------------------------------------------------------------


@dataclass
class Population:
    """Columnar description of the organisation (numpy arrays, one row per user / host / ...)."""

    # users (humans then service accounts)
    user_name: np.ndarray
    user_uid: np.ndarray
    user_email: np.ndarray  # None for service accounts
    user_role: np.ndarray
    user_type_id: np.ndarray
    user_profile: np.ndarray  # rhythm profile name
    user_tz: np.ndarray  # UTC offset (hours)
    user_city: np.ndarray  # index into CITIES (home city)
    user_office: np.ndarray  # office code
    user_remote: np.ndarray  # bool: works from a residential IP
    user_public_ip: np.ndarray  # office egress or residential IP
    user_internal_ip: np.ndarray  # laptop IP (office LAN or VPN pool)
    user_host: np.ndarray  # index into hosts (laptop) or -1
    user_ua: np.ndarray  # desktop browser user agent
    user_mobile_ua: np.ndarray  # phone user agent or None
    user_sdk_ua: np.ndarray  # cloud SDK user agent (or None)
    user_activity: np.ndarray  # relative activity level (lognormal)
    user_api_weight: np.ndarray  # share of cloud API calls
    # hosts (laptops then servers)
    host_name: np.ndarray
    host_ip: np.ndarray
    host_os: np.ndarray
    host_os_type_id: np.ndarray  # OCSF os.type_id: 100 Windows, 200 Linux, 300 macOS
    host_type_id: np.ndarray  # OCSF device.type_id: 1 Server, 2 Desktop, 3 Laptop
    host_role: np.ndarray  # "laptop" or a server role
    host_owner: np.ndarray  # user index or -1
    host_activity: np.ndarray
    host_tz: np.ndarray
    # services
    service_servers: dict[str, np.ndarray]  # service -> host indices
    # outside world
    customer_ip: np.ndarray
    customer_city: np.ndarray
    customer_weight: np.ndarray
    customer_ua: np.ndarray
    saas_ip: np.ndarray
    saas_city: np.ndarray
    saas_weight: np.ndarray
    resolver_ips: tuple[str, ...]
    cdn_names: np.ndarray  # normal short random-looking CDN hostnames
    travel: list = field(default_factory=list)  # (user idx, city idx, start ms, end ms): business trips

    @property
    def n_users(self) -> int:
        return len(self.user_name)

    @property
    def n_hosts(self) -> int:
        return len(self.host_name)

    def humans(self) -> np.ndarray:
        return np.flatnonzero(self.user_role != "service")

    def users_with_role(self, *roles: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.user_role, roles))

    def servers(self, *roles: str) -> np.ndarray:
        if roles:
            return np.flatnonzero(np.isin(self.host_role, roles))
        return np.flatnonzero(self.host_role != "laptop")

    def host_by_name(self, name: str) -> int:
        return int(np.flatnonzero(self.host_name == name)[0])


def _public_ips(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """Random globally routable IPv4 addresses (no private, reserved, multicast or documentation)."""
    out: list[str] = []
    bad_first = {0, 10, 100, 127, 169, 172, 192, 198, 203, 224} | set(range(225, 256))
    while len(out) < n:
        a = rng.integers(1, 224, size=2 * (n - len(out)) + 8)
        rest = rng.integers(0, 256, size=(len(a), 3))
        rest[:, 2] = np.clip(rest[:, 2], 1, 254)
        for first, (b, c, d) in zip(a.tolist(), rest.tolist()):
            if first in bad_first:
                continue
            ip = f"{first}.{b}.{c}.{d}"
            if ip not in taken:
                taken.add(ip)
                out.append(ip)
                if len(out) == n:
                    break
    return out


def _hex(rng: np.random.Generator, n: int, width: int) -> list[str]:
    raw = rng.bytes(n * ((width + 1) // 2)).hex()
    step = ((width + 1) // 2) * 2
    return [raw[i * step : i * step + width] for i in range(n)]


def _pick_ua(rng: np.random.Generator, os_kind: str) -> str:
    templates = BROWSER_TEMPLATES[os_kind]
    t = templates[int(rng.choice(len(templates), p=_ua_probs(len(templates))))]
    return t.format(
        cv=CHROME_VERSIONS[int(rng.integers(len(CHROME_VERSIONS)))],
        fv=int(rng.integers(121, 124)),
        sv=int(rng.integers(2, 4)),
    )


def _ua_probs(k: int) -> np.ndarray:
    p = np.array([0.62, 0.26, 0.12][:k])
    return p / p.sum()


def build_population(rng: np.random.Generator, n_humans: int = 240, start_ms: int = 0, days: int = 7) -> Population:
    """Draw the whole organisation from ``rng`` (deterministic for a given generator state)."""
    taken: set[str] = set()
    # ---------------------------------------------------------------- humans
    role_names = list(ROLES)
    shares = np.array([ROLES[r][0] for r in role_names])
    counts = np.floor(shares / shares.sum() * n_humans).astype(int)
    counts[0] += n_humans - counts.sum()
    roles = np.repeat(np.array(role_names, dtype=object), counts)

    names: list[str] = []
    seen: set[str] = set()
    for _ in range(n_humans):
        while True:
            nm = f"{FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))]}.{LAST_NAMES[int(rng.integers(len(LAST_NAMES)))]}"
            if nm not in seen:
                seen.add(nm)
                names.append(nm)
                break

    office_p = np.array([o[2] for o in OFFICES])
    office_idx = rng.choice(len(OFFICES), size=n_humans, p=office_p / office_p.sum())
    remote = rng.random(n_humans) < np.where(roles == "engineer", 0.45, 0.25)
    # executives and admins mostly in the office
    remote &= ~np.isin(roles, ("exec",))

    user_city = np.empty(n_humans, dtype=np.int64)
    public_ip = np.empty(n_humans, dtype=object)
    internal_ip = np.empty(n_humans, dtype=object)
    residential = _public_ips(rng, n_humans, taken)
    lan_counter = {o[0]: 20 for o in OFFICES}
    vpn_counter = 10
    for i in range(n_humans):
        code, city, _, egress, octet = OFFICES[office_idx[i]]
        country = CITIES[CITY_INDEX[city]][0]
        if remote[i]:
            choices = REMOTE_CITIES[country]
            user_city[i] = CITY_INDEX[choices[int(rng.integers(len(choices)))]]
            public_ip[i] = residential[i]
            vpn_counter += 1
            internal_ip[i] = f"10.8.{vpn_counter // 250}.{vpn_counter % 250 + 2}"
        else:
            user_city[i] = CITY_INDEX[city]
            public_ip[i] = f"192.0.2.{egress + int(rng.integers(1, 15))}"
            lan_counter[code] += 1
            n = lan_counter[code]
            internal_ip[i] = f"10.{octet}.{n // 250 + 1}.{n % 250 + 2}"

    tz = np.array([CITIES[c][4] for c in user_city], dtype=np.int64)
    uids = ["00u" + h for h in _hex(rng, n_humans, 17)]
    emails = [f"{n}@{ORG_DOMAIN}" for n in names]
    type_ids = np.array([ROLES[r][2] for r in roles], dtype=np.int64)
    profiles = np.array([ROLES[r][1] for r in roles], dtype=object)
    activity = rng.lognormal(0.0, 0.7, n_humans)

    # laptop OS by role
    os_kind = np.where(
        np.isin(roles, ("engineer",)),
        rng.choice(np.array(["mac", "win", "linux"], dtype=object), n_humans, p=[0.55, 0.3, 0.15]),
        rng.choice(np.array(["win", "mac"], dtype=object), n_humans, p=[0.75, 0.25]),
    )
    os_kind = np.where(roles == "admin", "win", os_kind)
    uas = np.array([_pick_ua(rng, k) for k in os_kind], dtype=object)
    has_phone = rng.random(n_humans) < 0.55
    mobile = np.array(
        [MOBILE_UAS[int(rng.integers(len(MOBILE_UAS)))] if p else None for p in has_phone], dtype=object
    )
    sdk = np.empty(n_humans, dtype=object)
    api_w = np.zeros(n_humans)
    for i, r in enumerate(roles):
        if ROLES[r][4]:
            kind = "cli" if r in ("engineer", "admin") else None
            sdk[i] = (
                SDK_UAS["cli"].format(a=int(rng.integers(2, 12)), b=int(rng.integers(4, 9))) if kind else None
            )
            api_w[i] = {"engineer": 0.35, "admin": 0.8, "finance": 0.08}[r] * activity[i]
        else:
            sdk[i] = None

    # ---------------------------------------------------------------- service accounts
    n_svc = len(SERVICE_ACCOUNTS)
    svc_names = [s[0] for s in SERVICE_ACCOUNTS]
    svc_sdk = [
        SDK_UAS[s[2]].format(a=int(rng.integers(2, 30)), b=int(rng.integers(1, 9))) if s[2] else None
        for s in SERVICE_ACCOUNTS
    ]

    # ---------------------------------------------------------------- hosts: laptops
    host_name: list[str] = []
    host_ip: list[str] = []
    host_os: list[str] = []
    host_os_type: list[int] = []
    host_type: list[int] = []
    host_role: list[str] = []
    host_owner: list[int] = []
    host_act: list[float] = []
    host_tz: list[int] = []
    user_host = np.full(n_humans + n_svc, -1, dtype=np.int64)
    os_names = {"win": ("Windows 11 Enterprise", 100), "mac": ("macOS 14.3.1", 300), "linux": ("Ubuntu 22.04.4 LTS", 200)}
    serials = rng.choice(np.arange(1000, 9999), size=n_humans, replace=False)
    for i in range(n_humans):
        kind = os_kind[i]
        if kind == "mac":
            first, last = names[i].split(".")
            hn = f"MBP-{first[0].upper()}{last[:6].upper()}"
            if hn in host_name:
                hn = f"{hn}{i % 10}"
        else:
            hn = f"LT-{ROLES[roles[i]][3]}-{serials[i]:04d}"
        user_host[i] = len(host_name)
        host_name.append(hn)
        host_ip.append(internal_ip[i])
        host_os.append(os_names[kind][0])
        host_os_type.append(os_names[kind][1])
        host_type.append(3)
        host_role.append("laptop")
        host_owner.append(i)
        host_act.append(float(activity[i]))
        host_tz.append(int(tz[i]))

    # ---------------------------------------------------------------- hosts: servers
    service_servers: dict[str, list[int]] = {s: [] for s in SERVICES}
    prefix_to_service = {v[3]: k for k, v in SERVICES.items()}
    tier_octet = {"edge": 1, "app": 2, "db": 3, "dc": 4, "fs": 4, "dns": 5, "ci": 6, "bastion": 7,
                  "backup": 7, "web": 8, "mail": 8}
    tier_count: dict[int, int] = {}
    for prefix, count, role, osn, _ports in SERVERS:
        for k in range(1, count + 1):
            octet = tier_octet[role]
            tier_count[octet] = tier_count.get(octet, 9) + 1
            idx = len(host_name)
            host_name.append(f"{prefix}-{k:02d}")
            host_ip.append(f"10.20.{octet}.{tier_count[octet]}")
            host_os.append(osn)
            host_os_type.append(100 if osn.startswith("Windows") else 200)
            host_type.append(1)
            host_role.append(role)
            host_owner.append(-1)
            host_act.append(float(rng.lognormal(0.3, 0.4)))
            host_tz.append(0)
            if prefix in prefix_to_service:
                service_servers[prefix_to_service[prefix]].append(idx)

    # service accounts are tied to a server where it makes sense
    svc_home = {"svc-ci-deploy": "ci-runner-01", "svc-backup": "backup-01", "svc-etl": "app-reporting-01",
                "svc-monitoring": "bastion-01", "svc-reporting": "app-reporting-01",
                "svc-orders-app": "app-orders-01", "svc-payments-app": "app-payments-01",
                "svc-log-shipper": "bastion-01", "svc-terraform": "ci-runner-02",
                "svc-jira-sync": "jira-01", "svc-ldap-sync": "dc-01", "svc-scanner": "ci-runner-03"}
    for j, nm in enumerate(svc_names):
        user_host[n_humans + j] = host_name.index(svc_home[nm])

    # ---------------------------------------------------------------- assemble users
    all_names = np.array(names + svc_names, dtype=object)
    svc_uids = ["00u" + h for h in _hex(rng, n_svc, 17)]
    svc_ips = [host_ip[user_host[n_humans + j]] for j in range(n_svc)]

    # ---------------------------------------------------------------- outside world
    cust_cities = [CITY_INDEX[c] for c in CUSTOMER_CITY_WEIGHTS]
    cust_w = np.array(list(CUSTOMER_CITY_WEIGHTS.values()), dtype=float)
    n_cust = 3000
    customer_city = rng.choice(np.array(cust_cities), size=n_cust, p=cust_w / cust_w.sum())
    customer_ip = np.array(_public_ips(rng, n_cust, taken), dtype=object)
    customer_weight = rng.pareto(1.3, n_cust) + 0.2  # a few heavy clients (partners, office NAT)
    cust_kind = rng.random(n_cust)
    cust_ua = np.empty(n_cust, dtype=object)
    for i in range(n_cust):
        if cust_kind[i] < 0.38:
            cust_ua[i] = MOBILE_UAS[int(rng.integers(len(MOBILE_UAS)))]
        elif cust_kind[i] < 0.97:
            cust_ua[i] = _pick_ua(rng, "win" if cust_kind[i] < 0.75 else "mac")
        else:
            cust_ua[i] = None  # clients that send no user agent at all

    saas_cities = [CITY_INDEX[c] for c in SAAS_CITY_WEIGHTS]
    saas_w = np.array(list(SAAS_CITY_WEIGHTS.values()), dtype=float)
    n_saas = 220
    saas_city = rng.choice(np.array(saas_cities), size=n_saas, p=saas_w / saas_w.sum())
    saas_ip = np.array(_public_ips(rng, n_saas, taken), dtype=object)
    saas_weight = 1.0 / np.arange(1, n_saas + 1) ** 1.1  # Zipf: a few destinations carry most flows

    cdn = []
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    for i in range(60):
        label = "".join(alphabet[rng.integers(0, 36, size=int(rng.integers(8, 15)))])
        cdn.append(f"{label}.{CDN_ZONES[i % len(CDN_ZONES)]}")

    # ---------------------------------------------------------------- business trips (benign geo change)
    travel = []
    travellers = rng.choice(np.flatnonzero(np.isin(roles, ("sales", "exec"))), size=4, replace=False)
    trip_cities = ("London", "Paris", "Madrid", "New York", "Vienna", "Zurich", "Stockholm")
    for u in travellers:
        c = CITY_INDEX[trip_cities[int(rng.integers(len(trip_cities)))]]
        if CITIES[c][0] == CITIES[user_city[u]][0]:
            c = CITY_INDEX["Milan"]
        d0 = int(rng.integers(0, max(1, days - 2)))
        travel.append((int(u), int(c), start_ms + d0 * 86_400_000, start_ms + (d0 + 2) * 86_400_000 + 43_200_000))

    svc_tz = np.zeros(n_svc, dtype=np.int64)
    return Population(
        user_name=all_names,
        user_uid=np.array(uids + svc_uids, dtype=object),
        user_email=np.array(emails + [None] * n_svc, dtype=object),
        user_role=np.concatenate([roles, np.array(["service"] * n_svc, dtype=object)]),
        user_type_id=np.concatenate([type_ids, np.full(n_svc, 3, dtype=np.int64)]),
        user_profile=np.concatenate([profiles, np.array([s[1] for s in SERVICE_ACCOUNTS], dtype=object)]),
        user_tz=np.concatenate([tz, svc_tz]),
        user_city=np.concatenate([user_city, np.full(n_svc, CITY_INDEX["Frankfurt am Main"])]),
        user_office=np.array([OFFICES[o][0] for o in office_idx] + ["DC"] * n_svc, dtype=object),
        user_remote=np.concatenate([remote, np.zeros(n_svc, dtype=bool)]),
        user_public_ip=np.concatenate([public_ip, np.array(svc_ips, dtype=object)]),
        user_internal_ip=np.concatenate([internal_ip, np.array(svc_ips, dtype=object)]),
        user_host=user_host,
        user_ua=np.concatenate([uas, np.array([None] * n_svc, dtype=object)]),
        user_mobile_ua=np.concatenate([mobile, np.array([None] * n_svc, dtype=object)]),
        user_sdk_ua=np.concatenate([sdk, np.array(svc_sdk, dtype=object)]),
        user_activity=np.concatenate([activity, np.full(n_svc, 1.0)]),
        user_api_weight=np.concatenate([api_w, np.array([s[3] for s in SERVICE_ACCOUNTS]) * 6.0]),
        host_name=np.array(host_name, dtype=object),
        host_ip=np.array(host_ip, dtype=object),
        host_os=np.array(host_os, dtype=object),
        host_os_type_id=np.array(host_os_type, dtype=np.int64),
        host_type_id=np.array(host_type, dtype=np.int64),
        host_role=np.array(host_role, dtype=object),
        host_owner=np.array(host_owner, dtype=np.int64),
        host_activity=np.array(host_act),
        host_tz=np.array(host_tz, dtype=np.int64),
        service_servers={k: np.array(v, dtype=np.int64) for k, v in service_servers.items()},
        customer_ip=customer_ip,
        customer_city=customer_city.astype(np.int64),
        customer_weight=customer_weight,
        customer_ua=cust_ua,
        saas_ip=saas_ip,
        saas_city=saas_city.astype(np.int64),
        saas_weight=saas_weight,
        resolver_ips=("10.20.5.10", "10.20.5.11"),
        cdn_names=np.array(cdn, dtype=object),
        travel=travel,
    )


# --------------------------------------------------------------------------------------------------
# Rhythms
# --------------------------------------------------------------------------------------------------
_OFFICE = np.array([0.04, 0.025, 0.02, 0.02, 0.03, 0.07, 0.2, 0.55, 0.9, 1.0, 1.0, 0.9,
                    0.7, 0.9, 1.0, 0.95, 0.85, 0.6, 0.35, 0.25, 0.2, 0.15, 0.1, 0.06])
_ENGINEER = np.array([0.08, 0.05, 0.04, 0.03, 0.03, 0.05, 0.12, 0.35, 0.7, 0.95, 1.0, 1.0,
                      0.8, 0.95, 1.0, 1.0, 0.95, 0.8, 0.55, 0.4, 0.35, 0.3, 0.22, 0.14])
_SUPPORT = np.array([0.03, 0.02, 0.02, 0.02, 0.03, 0.1, 0.5, 0.9, 1.0, 1.0, 1.0, 0.95,
                     0.85, 0.95, 1.0, 1.0, 0.95, 0.85, 0.6, 0.3, 0.15, 0.08, 0.05, 0.04])
_CUSTOMER = np.array([0.25, 0.15, 0.09, 0.07, 0.07, 0.1, 0.2, 0.35, 0.5, 0.6, 0.68, 0.75,
                      0.85, 0.8, 0.75, 0.72, 0.75, 0.82, 0.95, 1.0, 1.0, 0.9, 0.65, 0.4])
_FLAT = 0.75 + 0.25 * _OFFICE
_NIGHTLY = np.full(24, 0.25)
_NIGHTLY[1:4] = [3.0, 4.0, 2.0]  # backup / ETL windows (UTC 01:00-04:00)
_BATCH_DAY = 0.3 + 0.9 * _ENGINEER  # CI / reporting follows the engineers

PROFILES = {
    # name -> (24 local-hour weights, weekend multiplier)
    "office": (_OFFICE, 0.12),
    "engineer": (_ENGINEER, 0.28),
    "support": (_SUPPORT, 0.45),
    "customer": (_CUSTOMER, 1.15),
    "flat": (_FLAT, 0.9),
    "nightly": (_NIGHTLY, 1.0),
    "batch_day": (_BATCH_DAY, 0.4),
    "server": (0.6 + 0.4 * _CUSTOMER, 1.0),
}


def hourly_weights(profile: str, tz: int, start_ms: int, days: int) -> np.ndarray:
    """Relative event rate for each UTC hour of the window, for a profile in time zone ``tz``."""
    hours = np.arange(days * 24)
    utc_hour0 = (start_ms // 3_600_000) % 24
    utc_day0 = (start_ms // 86_400_000 + 3) % 7  # 1970-01-01 was a Thursday -> Monday = 0
    abs_hours = hours + utc_hour0 + tz
    local_hour = abs_hours % 24
    local_dow = (utc_day0 + abs_hours // 24) % 7
    curve, weekend = PROFILES[profile]
    w = curve[local_hour] * np.where(local_dow >= 5, weekend, 1.0)
    return w / w.sum()
