//! ISO 3166-1 country codes and ISO 4217 currency codes as tables: channels send alpha-3
//! countries (Walmart) and the canonical model wants alpha-2, and money needs known currencies.
//!
//! Generated once from the ISO 3166-1 and ISO 4217 lists published in Debian's `iso-codes`
//! package; codes are facts, so the tables are kept sorted for binary search and edited by hand
//! when ISO adds a code.

/// (alpha-3, alpha-2) pairs, sorted by alpha-3.
const ALPHA3_TO_ALPHA2: [(&str, &str); 249] = [
    ("ABW", "AW"),
    ("AFG", "AF"),
    ("AGO", "AO"),
    ("AIA", "AI"),
    ("ALA", "AX"),
    ("ALB", "AL"),
    ("AND", "AD"),
    ("ARE", "AE"),
    ("ARG", "AR"),
    ("ARM", "AM"),
    ("ASM", "AS"),
    ("ATA", "AQ"),
    ("ATF", "TF"),
    ("ATG", "AG"),
    ("AUS", "AU"),
    ("AUT", "AT"),
    ("AZE", "AZ"),
    ("BDI", "BI"),
    ("BEL", "BE"),
    ("BEN", "BJ"),
    ("BES", "BQ"),
    ("BFA", "BF"),
    ("BGD", "BD"),
    ("BGR", "BG"),
    ("BHR", "BH"),
    ("BHS", "BS"),
    ("BIH", "BA"),
    ("BLM", "BL"),
    ("BLR", "BY"),
    ("BLZ", "BZ"),
    ("BMU", "BM"),
    ("BOL", "BO"),
    ("BRA", "BR"),
    ("BRB", "BB"),
    ("BRN", "BN"),
    ("BTN", "BT"),
    ("BVT", "BV"),
    ("BWA", "BW"),
    ("CAF", "CF"),
    ("CAN", "CA"),
    ("CCK", "CC"),
    ("CHE", "CH"),
    ("CHL", "CL"),
    ("CHN", "CN"),
    ("CIV", "CI"),
    ("CMR", "CM"),
    ("COD", "CD"),
    ("COG", "CG"),
    ("COK", "CK"),
    ("COL", "CO"),
    ("COM", "KM"),
    ("CPV", "CV"),
    ("CRI", "CR"),
    ("CUB", "CU"),
    ("CUW", "CW"),
    ("CXR", "CX"),
    ("CYM", "KY"),
    ("CYP", "CY"),
    ("CZE", "CZ"),
    ("DEU", "DE"),
    ("DJI", "DJ"),
    ("DMA", "DM"),
    ("DNK", "DK"),
    ("DOM", "DO"),
    ("DZA", "DZ"),
    ("ECU", "EC"),
    ("EGY", "EG"),
    ("ERI", "ER"),
    ("ESH", "EH"),
    ("ESP", "ES"),
    ("EST", "EE"),
    ("ETH", "ET"),
    ("FIN", "FI"),
    ("FJI", "FJ"),
    ("FLK", "FK"),
    ("FRA", "FR"),
    ("FRO", "FO"),
    ("FSM", "FM"),
    ("GAB", "GA"),
    ("GBR", "GB"),
    ("GEO", "GE"),
    ("GGY", "GG"),
    ("GHA", "GH"),
    ("GIB", "GI"),
    ("GIN", "GN"),
    ("GLP", "GP"),
    ("GMB", "GM"),
    ("GNB", "GW"),
    ("GNQ", "GQ"),
    ("GRC", "GR"),
    ("GRD", "GD"),
    ("GRL", "GL"),
    ("GTM", "GT"),
    ("GUF", "GF"),
    ("GUM", "GU"),
    ("GUY", "GY"),
    ("HKG", "HK"),
    ("HMD", "HM"),
    ("HND", "HN"),
    ("HRV", "HR"),
    ("HTI", "HT"),
    ("HUN", "HU"),
    ("IDN", "ID"),
    ("IMN", "IM"),
    ("IND", "IN"),
    ("IOT", "IO"),
    ("IRL", "IE"),
    ("IRN", "IR"),
    ("IRQ", "IQ"),
    ("ISL", "IS"),
    ("ISR", "IL"),
    ("ITA", "IT"),
    ("JAM", "JM"),
    ("JEY", "JE"),
    ("JOR", "JO"),
    ("JPN", "JP"),
    ("KAZ", "KZ"),
    ("KEN", "KE"),
    ("KGZ", "KG"),
    ("KHM", "KH"),
    ("KIR", "KI"),
    ("KNA", "KN"),
    ("KOR", "KR"),
    ("KWT", "KW"),
    ("LAO", "LA"),
    ("LBN", "LB"),
    ("LBR", "LR"),
    ("LBY", "LY"),
    ("LCA", "LC"),
    ("LIE", "LI"),
    ("LKA", "LK"),
    ("LSO", "LS"),
    ("LTU", "LT"),
    ("LUX", "LU"),
    ("LVA", "LV"),
    ("MAC", "MO"),
    ("MAF", "MF"),
    ("MAR", "MA"),
    ("MCO", "MC"),
    ("MDA", "MD"),
    ("MDG", "MG"),
    ("MDV", "MV"),
    ("MEX", "MX"),
    ("MHL", "MH"),
    ("MKD", "MK"),
    ("MLI", "ML"),
    ("MLT", "MT"),
    ("MMR", "MM"),
    ("MNE", "ME"),
    ("MNG", "MN"),
    ("MNP", "MP"),
    ("MOZ", "MZ"),
    ("MRT", "MR"),
    ("MSR", "MS"),
    ("MTQ", "MQ"),
    ("MUS", "MU"),
    ("MWI", "MW"),
    ("MYS", "MY"),
    ("MYT", "YT"),
    ("NAM", "NA"),
    ("NCL", "NC"),
    ("NER", "NE"),
    ("NFK", "NF"),
    ("NGA", "NG"),
    ("NIC", "NI"),
    ("NIU", "NU"),
    ("NLD", "NL"),
    ("NOR", "NO"),
    ("NPL", "NP"),
    ("NRU", "NR"),
    ("NZL", "NZ"),
    ("OMN", "OM"),
    ("PAK", "PK"),
    ("PAN", "PA"),
    ("PCN", "PN"),
    ("PER", "PE"),
    ("PHL", "PH"),
    ("PLW", "PW"),
    ("PNG", "PG"),
    ("POL", "PL"),
    ("PRI", "PR"),
    ("PRK", "KP"),
    ("PRT", "PT"),
    ("PRY", "PY"),
    ("PSE", "PS"),
    ("PYF", "PF"),
    ("QAT", "QA"),
    ("REU", "RE"),
    ("ROU", "RO"),
    ("RUS", "RU"),
    ("RWA", "RW"),
    ("SAU", "SA"),
    ("SDN", "SD"),
    ("SEN", "SN"),
    ("SGP", "SG"),
    ("SGS", "GS"),
    ("SHN", "SH"),
    ("SJM", "SJ"),
    ("SLB", "SB"),
    ("SLE", "SL"),
    ("SLV", "SV"),
    ("SMR", "SM"),
    ("SOM", "SO"),
    ("SPM", "PM"),
    ("SRB", "RS"),
    ("SSD", "SS"),
    ("STP", "ST"),
    ("SUR", "SR"),
    ("SVK", "SK"),
    ("SVN", "SI"),
    ("SWE", "SE"),
    ("SWZ", "SZ"),
    ("SXM", "SX"),
    ("SYC", "SC"),
    ("SYR", "SY"),
    ("TCA", "TC"),
    ("TCD", "TD"),
    ("TGO", "TG"),
    ("THA", "TH"),
    ("TJK", "TJ"),
    ("TKL", "TK"),
    ("TKM", "TM"),
    ("TLS", "TL"),
    ("TON", "TO"),
    ("TTO", "TT"),
    ("TUN", "TN"),
    ("TUR", "TR"),
    ("TUV", "TV"),
    ("TWN", "TW"),
    ("TZA", "TZ"),
    ("UGA", "UG"),
    ("UKR", "UA"),
    ("UMI", "UM"),
    ("URY", "UY"),
    ("USA", "US"),
    ("UZB", "UZ"),
    ("VAT", "VA"),
    ("VCT", "VC"),
    ("VEN", "VE"),
    ("VGB", "VG"),
    ("VIR", "VI"),
    ("VNM", "VN"),
    ("VUT", "VU"),
    ("WLF", "WF"),
    ("WSM", "WS"),
    ("YEM", "YE"),
    ("ZAF", "ZA"),
    ("ZMB", "ZM"),
    ("ZWE", "ZW"),
];

/// Alpha-2 codes, sorted.
const ALPHA2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// ISO 4217 currency codes, sorted.
const CURRENCIES: [&str; 181] = [
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HRK", "HTG", "HUF", "IDR",
    "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW",
    "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA",
    "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD",
    "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG",
    "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE",
    "SLL", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP",
    "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED",
    "VES", "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XDR",
    "XOF", "XPD", "XPF", "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWL",
];
/// Currencies whose minor unit is not 1/100; every other listed currency has two decimals,
/// except the precious metals, funds and testing codes (`X..`) that ISO gives no minor unit.
const EXPONENT_EXCEPTIONS: [(&str, u32); 26] = [
    ("BHD", 3),
    ("BIF", 0),
    ("CLF", 4),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("PYG", 0),
    ("RWF", 0),
    ("TND", 3),
    ("UGX", 0),
    ("UYI", 0),
    ("UYW", 4),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
];

/// Codes ISO 4217 lists with no minor unit at all ("N.A."): metals, funds, testing.
const NO_MINOR_UNIT: [&str; 13] = [
    "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX",
];

/// The ISO 3166-1 alpha-2 code for an alpha-3 or alpha-2 code, in any letter case.
pub fn country_alpha2(code: &str) -> Option<&'static str> {
    let upper = code.trim().to_ascii_uppercase();
    match upper.len() {
        3 => ALPHA3_TO_ALPHA2
            .binary_search_by(|(alpha3, _)| (*alpha3).cmp(upper.as_str()))
            .ok()
            .map(|i| ALPHA3_TO_ALPHA2[i].1),
        2 => ALPHA2
            .binary_search(&upper.as_str())
            .ok()
            .map(|i| ALPHA2[i]),
        _ => None,
    }
}

/// A three-byte code as one integer ordered as its bytes are, so that a currency lookup (one
/// per amount of an order) compares integers rather than calling `memcmp` at every probe.
const fn code_key(code: &[u8]) -> u32 {
    ((code[0] as u32) << 16) | ((code[1] as u32) << 8) | code[2] as u32
}

/// The minor-unit digits `CURRENCY_DIGITS` gives a code ISO lists with no minor unit.
const NO_DIGITS: u8 = u8::MAX;

/// Every currency of `CURRENCIES` as its `code_key`, in the same (sorted) order, with its
/// minor-unit digits from `EXPONENT_EXCEPTIONS` and `NO_MINOR_UNIT` (2 when neither lists it):
/// built from those tables when the crate compiles, so they stay the one place to edit.
const CURRENCY_DIGITS: [(u32, u8); CURRENCIES.len()] = {
    let mut table = [(0, 2); CURRENCIES.len()];
    let mut i = 0;
    while i < CURRENCIES.len() {
        let key = code_key(CURRENCIES[i].as_bytes());
        table[i].0 = key;
        let mut j = 0;
        while j < EXPONENT_EXCEPTIONS.len() {
            if code_key(EXPONENT_EXCEPTIONS[j].0.as_bytes()) == key {
                table[i].1 = EXPONENT_EXCEPTIONS[j].1 as u8;
            }
            j += 1;
        }
        j = 0;
        while j < NO_MINOR_UNIT.len() {
            if code_key(NO_MINOR_UNIT[j].as_bytes()) == key {
                table[i].1 = NO_DIGITS;
            }
            j += 1;
        }
        i += 1;
    }
    table
};

/// The minor-unit digits of a listed currency (`NO_DIGITS` for none); `None` when `code` is
/// not an ISO 4217 code.
fn currency_digits(code: &str) -> Option<u8> {
    let code = code.as_bytes();
    if code.len() != 3 {
        return None;
    }
    let key = code_key(code);
    CURRENCY_DIGITS
        .binary_search_by_key(&key, |&(k, _)| k)
        .ok()
        .map(|i| CURRENCY_DIGITS[i].1)
}

/// Whether `code` is an ISO 4217 alphabetic currency code (upper case, as ISO writes it).
pub fn is_currency(code: &str) -> bool {
    currency_digits(code).is_some()
}

/// Digits after the decimal point of the currency's minor unit (2 for USD, 0 for JPY, 3 for
/// KWD); `None` for unknown codes and for codes ISO gives no minor unit.
pub fn currency_exponent(code: &str) -> Option<u32> {
    currency_digits(code)
        .filter(|&d| d != NO_DIGITS)
        .map(u32::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(ALPHA3_TO_ALPHA2.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ALPHA2.windows(2).all(|w| w[0] < w[1]));
        assert!(CURRENCIES.windows(2).all(|w| w[0] < w[1]));
        assert!(EXPONENT_EXCEPTIONS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(EXPONENT_EXCEPTIONS.iter().all(|(c, _)| is_currency(c)));
        assert!(NO_MINOR_UNIT.iter().all(|c| is_currency(c)));
        assert!(CURRENCIES.iter().all(|c| c.len() == 3));
    }

    /// The integer table answers what the string tables say, for every listed code and for
    /// codes that are not listed (the lookup it replaced searched the string tables).
    #[test]
    fn the_integer_table_answers_as_the_string_tables() {
        for code in CURRENCIES {
            let expected = if NO_MINOR_UNIT.contains(&code) {
                None
            } else {
                Some(
                    EXPONENT_EXCEPTIONS
                        .iter()
                        .find(|(c, _)| *c == code)
                        .map_or(2, |(_, e)| *e),
                )
            };
            assert!(is_currency(code), "{code}");
            assert_eq!(currency_exponent(code), expected, "{code}");
        }
        assert_eq!(CURRENCY_DIGITS.len(), CURRENCIES.len());
        assert!(CURRENCY_DIGITS.windows(2).all(|w| w[0].0 < w[1].0));
        for code in [
            "", "US", "USDX", "usd", "UsD", "AAA", "ZZZ", "U\u{e9}", "\u{20ac}",
        ] {
            assert!(!is_currency(code), "{code:?}");
            assert_eq!(currency_exponent(code), None, "{code:?}");
        }
    }

    #[test]
    fn alpha3_and_alpha2_map_to_alpha2() {
        assert_eq!(country_alpha2("USA"), Some("US"));
        assert_eq!(country_alpha2("usa"), Some("US"));
        assert_eq!(country_alpha2("DEU"), Some("DE"));
        assert_eq!(country_alpha2("JPN"), Some("JP"));
        assert_eq!(country_alpha2("US"), Some("US"));
        assert_eq!(country_alpha2("XXA"), None);
        assert_eq!(country_alpha2("ZZ"), None);
        assert_eq!(country_alpha2("United States"), None);
    }

    #[test]
    fn currency_exponents_follow_iso_4217() {
        assert_eq!(currency_exponent("USD"), Some(2));
        assert_eq!(currency_exponent("JPY"), Some(0));
        assert_eq!(currency_exponent("KWD"), Some(3));
        assert_eq!(currency_exponent("CLF"), Some(4));
        assert_eq!(currency_exponent("XAU"), None);
        assert_eq!(currency_exponent("ABC"), None);
        assert_eq!(currency_exponent("usd"), None);
    }
}
