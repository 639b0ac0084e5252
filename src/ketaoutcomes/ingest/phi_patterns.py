"""The patterns of the PHI guard (:mod:`ketaoutcomes.ingest.phi`): column-name rules, value regexes
and the word lists they use. Constants and small pure helpers only; see docs/phi-guard.md.

ASCII classes and ASCII word boundaries throughout: faster (the lazy DFA never falls back for
Unicode word boundaries) and identifiers are written in ASCII.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --------------------------------------------------------------------------- column-name rules


def name_tokens(name: str) -> list[str]:
    """'patientFirstName' / 'Patient First-Name' / 'PATIENT_FIRST_NAME' -> ['patient', 'first', 'name']."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", s)
    return re.findall(r"[a-z]+|[0-9]+", s.lower())


@dataclass(frozen=True)
class NameRule:
    rule: str
    what: str
    compact: str  # regex searched in the lower-case name with every separator removed
    tokens: frozenset[str] = frozenset()  # or any of these as a whole word

    def matches(self, tokens: list[str], compact: str) -> bool:
        return bool(re.search(self.compact, compact)) or not self.tokens.isdisjoint(tokens)


#: Words that say a "..._name" column names a thing, not a person.
THING_WORDS = frozenset("""
    drug drugs medication medications med meds product brand generic compound molecule formulation route
    site sites clinic hospital facility center centre practice unit ward department service program programme
    instrument scale test questionnaire assessment arm study trial protocol sponsor manufacturer
    file filename column field variable table dataset sheet tab event ae diagnosis dx condition disorder
    code category group cohort phase visit lab assay procedure device country region state
""".split())

NAME_RULES: tuple[NameRule, ...] = (
    NameRule("column_name.ip_address", "an IP address",
              r"^(?:client|source|src|remote|user|host|login|device|patient)?ipv?[46]?(?:address|addr)?$|ipaddr"),
    NameRule("column_name.email", "an e-mail address", r"(?<!voic)email|^mail(?:address|addr)?$"),
    NameRule("column_name.url", "a web address (URL)",
              r"website|webpage|homepage|webaddress|weburl|^url|url$|^uri$", frozenset({"url", "urls", "uri"})),
    NameRule("column_name.birth_date", "a date of birth",
              r"dateofbirth|birthdate|birthday|birthdt|datebirth|dateborn|borndate|^dob|dob$|^born(?:on)?$|^bday$",
              frozenset({"dob", "bday", "birthday"})),
    NameRule("column_name.phone", "a phone or fax number",
              r"phone|^tel(?:no|nr|num|number)?$|^(?:mobile|cell|fax|pager)(?:no|nr|num|number|phone)?$"
              r"|faxnumber|faxno|pager|contactnumber|contactno|mobilenumber|mobileno|voicemail",
              frozenset({"tel", "fax", "pager"})),
    NameRule("column_name.identifier_number", "an identifying number (SSN, medical record, plan, account, "
              "licence, vehicle or device number)",
              r"socialsecurity|medicalrecord|recordnumber|recordno|chartnumber|chartno|healthplan|insuranceid"
              r"|insurancenumber|insuranceno|policynumber|policyno|memberid|membernumber|memberno|beneficiary"
              r"|accountnumber|accountno|acctno|acctnumber|acctnum|licensenumber|licencenumber|licenseno|licenceno"
              r"|driverslicen[cs]e|driverlicen[cs]e|licen[cs]eplate|numberplate|vehicle|deviceserial|serialnumber"
              r"|serialno|deviceid|nhsnumber|nhsno|medicareno|medicarenumber|medicaidno|medicaidnumber|passport"
              r"|nationalid|nationalinsurance|username|^ssn|ssn$|^mrn|mrn$",
              frozenset({"ssn", "mrn", "vin", "plate", "plates", "nhs", "udi", "hicn", "mbi", "medicare", "medicaid"})),
    NameRule("column_name.zip", "a ZIP or postal code", r"zipcode|postcode|postalcode|^zip|zip$",
              frozenset({"zip", "postal", "postcode"})),
    NameRule("column_name.address", "an address or place of residence",
              r"address|street|latitude|longitude|geolocation|geocode",
              frozenset({"addr", "street", "city", "town", "county", "suburb", "precinct", "municipality",
                         "residence", "domicile", "gps"})),
    NameRule("column_name.person_name", "a person's name",
              r"firstname|lastname|givenname|familyname|middlename|surname|fullname|forename|maidenname|nickname"
              r"|patientname|nextofkin|emergencycontact|kinname",
              frozenset({"nok", "surname", "forename", "initials", "kin"})),
    NameRule("column_name.biometric", "a photo or biometric identifier",
              r"photo|fingerprint|voiceprint|retina|iris(?:scan|image)|faceimage|facial|biometric"),
)


def column_name_rule(name: str) -> NameRule | None:
    tokens = name_tokens(name)
    compact = "".join(tokens)
    for rule in NAME_RULES:
        if rule.matches(tokens, compact):
            return rule
    # a bare "name" / "..._name": a person unless it qualifies a thing (drug_name, site_name, ...)
    if ({"name", "names"} & set(tokens)) and not (THING_WORDS & set(tokens)):
        return NAME_RULES[-2]
    return None


# --------------------------------------------------------------------------- value patterns

# ASCII classes and ASCII word boundaries throughout: faster (the lazy DFA never
# falls back for Unicode word boundaries) and identifiers are written in ASCII.
_B = r"(?-u:\b)"
_D = "[0-9]"

P_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
P_SSN = rf"{_B}{_D}{{3}}-{_D}{{2}}-{_D}{{4}}{_B}|{_B}{_D}{{3}} {_D}{{2}} {_D}{{4}}{_B}"
P_PHONE = "|".join((
    rf"\({_D}{{3}}\) ?{_D}{{3}}[-. ]{_D}{{4}}{_B}",  # (555) 123-4567
    rf"{_B}{_D}{{3}}[-.]{_D}{{3}}[-.]{_D}{{4}}{_B}",  # 555-123-4567, 555.123.4567, 1-555-123-4567
    rf"{_B}{_D}{{3}} {_D}{{3}} {_D}{{4}}{_B}",  # 555 123 4567
    # +1 555 123 4567, +44 20 7946 0958, +33 1 23 45 67 89, +15551234567 (no '.' separators: +100.25 is a number)
    rf"(?:^|[^0-9A-Za-z+])\+{_D}{{1,3}}[ -]?\(?{_D}{{1,4}}\)?(?:[ -]?{_D}{{2,4}}){{2,4}}{_B}",
))
_OCT = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_HEX = "[0-9A-Fa-f]{1,4}"
P_IP = "|".join((
    rf"{_B}(?:{_OCT}\.){{3}}{_OCT}{_B}",  # IPv4
    rf"{_B}(?:{_HEX}:){{7}}{_HEX}{_B}",  # IPv6, full
    rf"{_B}(?:{_HEX}:){{1,6}}:{_HEX}(?::{_HEX}){{0,5}}{_B}",  # IPv6 with '::' (a time 09:00:00 has no '::')
    rf"{_B}(?:{_HEX}:){{2,7}}:",
))
P_URL = r"(?i:(?-u:\b)(?:https?|ftp)://[^\s]+|(?-u:\b)www\.[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,})"

_STREET_TYPES = ("Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace|Way"
                 "|Parkway|Pkwy|Highway|Hwy|Close|Crescent|Square|Sq|Circle|Cir|Gardens|Mews|Row|Walk")
P_STREET = "|".join((
    # 12 Oak Street, 221B Baker St, 1600 Pennsylvania Avenue NW
    rf"{_B}{_D}{{1,5}}[A-Za-z]? +(?:[A-Z][a-z]+\.? +){{1,3}}(?:{_STREET_TYPES}){_B}",
    rf"{_B}{_D}{{1,5}}[A-Z]? +(?:[A-Z]{{2,}} +){{1,3}}(?:{_STREET_TYPES.upper()}){_B}",
    r"(?i:(?-u:\b)p\.? ?o\.? +box +[0-9]+)",  # PO Box 123
))
_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY"
           "|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR")
P_ZIP_WHOLE = rf"^\s*{_D}{{5}}(?:-{_D}{{4}})?\s*$"  # the whole value is a ZIP: share threshold
P_ZIP_STATE = rf"{_B}(?:{_STATES}),? +{_D}{{5}}(?:-{_D}{{4}})?{_B}"  # "Springfield, IL 62704": one row

_CAP = r"[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?"
# The whole value is 2-3 capitalised words (optionally a middle initial), or "Last, First".
P_NAME_WEAK = rf"^\s*(?:{_CAP}(?: +[A-Z]\.?)?(?: +{_CAP}){{1,2}}|{_CAP}, *{_CAP}(?: +[A-Z]\.?)?)\s*$"

#: Common given names that are not also common English or clinical words (no
#: May, Will, Grace, Hope, Mark, Ward, Iris, Max, Victoria, Jordan, ...). A given
#: name followed by another word, in any case, is a name in one row.
GIVEN_NAMES = frozenset("""
    aaron adam adrian alan albert alex alexander alexandra alice alicia allison amanda amy andrea andrew angela
    anna anne anthony antonio arthur ashley barbara benjamin betty beverly brandon brenda brian bruce bryan
    carl carlos carolyn catherine charles cheryl christina christine christopher cynthia daniel
    danielle david deborah debra denise dennis diana diane donald donna dorothy douglas edward elizabeth
    emily emma eric ethan evelyn frances francis gabriel gary george gerald gloria gregory hannah harold
    harry heather helen henry howard isabella jacob james janet janice jason jeffrey jennifer jeremy jessica
    joan joe john johnny jonathan joseph joshua joyce juan judith judy julia julie justin karen katherine
    kathleen kathryn keith kelly kenneth kevin kimberly kyle laura lauren linda lisa louis
    margaret maria marie marilyn martha mary matthew megan melissa michael michelle nancy natalie nathan
    nicholas nicole noah olivia pamela patricia patrick paul peter philip rachel ralph randy raymond rebecca
    richard robert roger ronald roy russell ryan samantha samuel sandra sara sarah scott sean sharon shirley
    sophia stephanie stephen steven susan teresa theresa thomas timothy vincent walter wayne
    william zachary mohammed muhammad ahmed fatima priya wei ming hiroshi yuki olga ivan dmitri sergei
    giuseppe francesca pierre jean-pierre hans klaus jurgen sven lars ingrid astrid
    jane jack jill kate liam lucas chloe amelia oliver zoe luke mason elijah isaac caleb owen nora leah lucy
    sofia camila mateo santiago diego jose luis carmen raj ravi amit anil sunil deepak arjun aisha omar hassan
    yusuf ibrahim chidi ngozi emeka kwame kofi oluwaseun adebayo
""".split())

#: Words that make a capitalised phrase a place, an institution, a drug or a clinical
#: term, not a person ("North Clinic", "Ketamine Infusion", "Lithium Carbonate",
#: "Mild Dissociation", ...). Checked on the whole value (weak rule) and on a given
#: name's match with one word either side (strong rule: "St John Ambulance").
STOP_WORDS = frozenset("""
    clinic clinics hospital hospitals center centre centers centres medical medicine health healthcare university
    institute site sites unit units ward wards department dept general memorial regional community practice
    group services service care trust campus office building north south east west central northern southern
    eastern western upper lower main city county valley park hill hills heights lake river bay beach mount mt
    saint st san santa fort port cape street road avenue lane hall house court square foundation partners
    associates network system systems pavilion wing annex outpatient inpatient mental behavioral behavioural
    psychiatry psychiatric psychology neuro wellness recovery treatment research study trial ambulance
    emergency ambulatory private public national state royal children childrens women womens veterans va
    terrace grove view ridge rapids arbor harbor harbour meadow meadows springs spring falls creek woods forest
    glen grand green point crossing village town township shore shores island garden gardens place plaza tower
    towers downtown uptown midtown riverside lakeside lakeview hillside
    ketamine esketamine racemic intranasal nasal oral sublingual intravenous intramuscular infusion injection
    spray tablet tablets capsule capsules solution lozenge troche drops hydrochloride hcl hydrobromide sodium
    potassium lithium magnesium calcium carbonate citrate oxalate mesylate maleate succinate tartrate fumarate
    besylate sulfate sulphate phosphate acetate bromide chloride lactate gluconate valproate divalproex
    extended delayed modified immediate sustained release xr xl er sr cr la ir odt mg dose doses generic brand
    depression depressive disorder bipolar major rating scale questionnaire inventory score test assessment
    clinician nurse physician team adverse event nausea headache dizziness vertigo vomiting sedation anxiety
    dissociation hallucinations hypertension hypotension tachycardia blood pressure heart rate mild moderate
    severe transient resolved elevated increased decreased symptoms baseline visit induction maintenance
    response remission relapse partial good poor prior history improved improvement worse worsening episode
    attack pain chest mouth dry vision blurred signs vital stable room ect tms icu
    placebo bupropion monday tuesday wednesday thursday friday saturday sunday january february march april may june
    july august september october november december
""".split())
#: Words that make a whole value a phrase rather than a name ("Not Done", "Lost To Follow Up").
PHRASE_WORDS = frozenset("""
    and or of the to for with without per plus not no yes none unknown other new old first second third
    week weeks month months day days completed ongoing switched lost follow up done na active control
    standard usual high low total left right self
""".split())
#: Word endings of drug names ("Escitalopram Oxalate", "Quetiapine Fumarate").
DRUG_STEMS = ("oxetine", "pram", "tamine", "azepam", "azolam", "triptyline", "ipramine", "faxine", "azodone",
              "apine", "idone", "piprazole", "trigine", "mazepine", "barbital", "phenidate", "phetamine", "zolpidem",
              "pine", "zine", "xetine")

_GIVEN = "|".join(sorted(GIVEN_NAMES))
P_NAME_GIVEN = (
    rf"(?i:(?-u:\b)(?:{_GIVEN}) +[a-z][a-z'-]+)"  # John Smith, JOHN SMITH, called john about ...
    rf"|(?i:(?-u:\b)[a-z][a-z'-]+, *(?:{_GIVEN})(?-u:\b))"  # SMITH, JOHN
)
P_NAME_TITLE = r"(?-u:\b)(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.? +[A-Z][a-z][A-Za-z'-]*"  # Mrs Jones, Dr. Smith
P_NAME_STRONG = f"{P_NAME_GIVEN}|{P_NAME_TITLE}"
# For extraction: a given name with one word before and after ("St John Ambulance", "Mary Washington
# Hospital" are not people: a stop word within one word of the name clears it). A title clears only
# when the word it qualifies is a stop word ("Oak Dr Clinic"): "Dr Okafor's practice" is a person.
P_NAME_GIVEN_CTX = r"(?:(?-u:\b)[A-Za-z]+ +)?(?:" + P_NAME_GIVEN + r")(?: +[A-Za-z]+)?"
P_STOP = (r"(?i:(?-u:\b)(?:" + "|".join(sorted(STOP_WORDS)) + r")(?-u:\b)"
          r"|[a-z]+(?:" + "|".join(DRUG_STEMS) + r")(?-u:\b))")
P_PHRASE = r"(?i:(?-u:\b)(?:" + "|".join(sorted(PHRASE_WORDS)) + r")(?-u:\b))"

_MON = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_Y = r"(?:19|20)[0-9]{2}"
_MM = r"(?:0?[1-9]|1[0-2])"
_DD = r"(?:0?[1-9]|[12][0-9]|3[01])"
# A full date (day precision): ISO, US/European numeric, 12 Mar 1984, March 12, 1984.
P_DATE = (rf"(?i:(?-u:\b)(?:{_Y}[-/.]{_MM}[-/.]{_DD}|{_DD}[-/.]{_MM}[-/.]{_Y}|{_MM}[-/.]{_DD}[-/.]{_Y}"
          rf"|{_DD}[ -]{_MON}[ ,-]+{_Y}|{_MON} +{_DD},? +{_Y})(?-u:\b))")
P_YEAR = r"(?-u:\b)((?:19|20)[0-9]{2})(?-u:\b)"


@dataclass(frozen=True)
class ValueRule:
    rule: str
    what: str  # "e-mail addresses"
    pattern: str


HIGH_RULES: tuple[ValueRule, ...] = (
    ValueRule("value.email", "e-mail addresses", P_EMAIL),
    ValueRule("value.ssn", "social security numbers (NNN-NN-NNNN)", P_SSN),
    ValueRule("value.phone", "phone or fax numbers", P_PHONE),
    ValueRule("value.ip_address", "IP addresses", P_IP),
    ValueRule("value.url", "web addresses (URLs)", P_URL),
)
STREET_RULE = ValueRule("value.street_address", "street addresses", P_STREET)


# --------------------------------------------------------------------------- ids and headers

#: An id holding two words (a name): "Jane Doe", "DOE, JANE", "J. Doe".
P_ID_WORDS = r"[A-Za-z][A-Za-z.'-]*[ ,]+[A-Za-z]{2,}"
#: An id holding a full date, also written without separators after a letter (DOE19840312), or a
#: name or initials of 4+ letters next to a birth year (jdoe1984, 1984DOEJ).
P_ID_DATE = "|".join((
    P_DATE,
    r"[A-Za-z][-_.]?(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])(?:$|[^0-9])",
    r"^\s*[A-Za-z]{4,}[-_.]?(?:19|20)[0-9]{2}\s*$",
    r"^\s*(?:19|20)[0-9]{2}[-_.]?[A-Za-z]{4,}\s*$",
))
#: An id that says it is a record, chart, account or insurance number (MRN0044123456, NHS 943 476 5919).
P_ID_RECORD = r"(?i:^\s*(?:mrn|medrec|mr#|chart|acct|nhs|ssn|hicn|mbi|medicare|medicaid)[-_#:. ]?[0-9])"
#: An id with 8 or more digits in a row: the length of medical record, account and social security
#: numbers (the default id pattern allows 7; an export that declares its own pattern may allow more).
P_ID_LONG_DIGITS = "[0-9]{8,}"

#: A header is printed and stored only when it looks like a column name: a letter, then letters,
#: digits and underscores (64 at most, no run of 4 digits), no given name among its words, and none
#: of the identifier shapes of a header (phi.header_looks_like). Any other header is "#N" (its
#: 1-based position): it may be a data row pasted over the header, or a person's name.
P_ECHOABLE_HEADER = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
P_HEADER_DIGITS = "[0-9]{4,}"
