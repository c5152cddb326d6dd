"""Prompt set for distilling the embedded draft (written for this project).

Four kinds of requests: German->English translation, summarization of short news-like
paragraphs (invented, written for this file), instructions, and open chat.
``TRAIN_PROMPTS`` (160 prompts) and ``TOPIC_PROMPTS`` (90 topics x 12 instruction/chat
templates = 1080 prompts) are used by :mod:`rsd.train.draft`; ``HELDOUT_PROMPTS`` (34) is
used only by :mod:`rsd.train.evaluate`. The held-out items below the ``# held-out``
markers share no sentence, paragraph, instruction or chat message with the training
prompts, and no topic of ``TOPIC_PROMPTS`` is the subject of a held-out prompt.
Each entry is ``(category, user_message)``.
"""
from __future__ import annotations

_TRANSLATE_TEMPLATES = [
    "Translate the following German sentence into English:\n{}",
    "Translate to English: {}",
    "What does this mean in English? \"{}\"",
    "Please give an English translation of this German text.\n\n{}",
    "German: {}\nEnglish:",
    "Can you translate this from German to English for me? {}",
]

_GERMAN_TRAIN = [
    "Der Zug nach Berlin hat heute zwanzig Minuten Verspätung.",
    "Ich habe gestern einen sehr interessanten Artikel über Klimawandel gelesen.",
    "Können Sie mir bitte sagen, wo der nächste Supermarkt ist?",
    "Die Regierung plant, die Steuern für kleine Unternehmen zu senken.",
    "Meine Schwester studiert Medizin an der Universität Heidelberg.",
    "Das Wetter war am Wochenende so schön, dass wir wandern gegangen sind.",
    "Wir müssen das Projekt bis Ende des Monats abschließen.",
    "Der neue Bahnhof soll im nächsten Jahr eröffnet werden.",
    "Kinder sollten jeden Tag mindestens eine Stunde draußen spielen.",
    "Die Preise für Energie sind im letzten Winter stark gestiegen.",
    "Ich trinke morgens immer eine Tasse Kaffee mit Milch.",
    "Das Museum ist montags geschlossen.",
    "Nach dem Spiel feierten die Fans bis spät in die Nacht.",
    "Die Forscher haben eine neue Art von Frosch im Regenwald entdeckt.",
    "Bitte schalten Sie Ihr Mobiltelefon während der Vorstellung aus.",
    "Unser Nachbar hat einen großen Garten mit vielen Apfelbäumen.",
    "Die Konferenz wurde wegen des Streiks auf nächste Woche verschoben.",
    "Er hat seinen Schlüssel im Büro vergessen.",
    "Viele Menschen fahren im Sommer mit dem Fahrrad zur Arbeit.",
    "Die Stadt investiert zwei Millionen Euro in neue Spielplätze.",
    "Ich würde gerne einen Tisch für vier Personen reservieren.",
    "Das Buch wurde in mehr als dreißig Sprachen übersetzt.",
    "Der Arzt hat mir geraten, mehr Wasser zu trinken.",
    "Im Herbst fallen die Blätter von den Bäumen.",
    "Die Firma sucht neue Mitarbeiter für ihr Team in München.",
    "Wir haben den ganzen Abend über Politik diskutiert.",
    "Der Flughafen war wegen Nebel mehrere Stunden gesperrt.",
    "Meine Großmutter backt jeden Sonntag einen Kuchen.",
    "Die Schüler schreiben morgen eine Prüfung in Mathematik.",
    "Es ist wichtig, regelmäßig Pausen bei der Arbeit zu machen.",
    "Die Polizei sucht Zeugen für den Unfall auf der Autobahn.",
    "Ich habe keine Zeit, weil ich noch einkaufen muss.",
    "Das Konzert war ausverkauft, aber wir haben noch Karten bekommen.",
    "Der Fluss ist nach dem starken Regen über die Ufer getreten.",
    "Sie spricht fließend Deutsch, Englisch und Spanisch.",
    "Die Bibliothek bietet jetzt auch digitale Bücher an.",
    "Wann fährt der letzte Bus in die Innenstadt?",
    "Der Minister hat seinen Rücktritt angekündigt.",
    "Wir freuen uns auf Ihren Besuch im nächsten Monat.",
    "Die Mannschaft hat das Finale mit drei zu eins gewonnen.",
]

_GERMAN_HELDOUT = [
    "Die neue Brücke über den Rhein wird erst im Frühjahr fertig.",
    "Mein Bruder arbeitet seit fünf Jahren als Lehrer in Hamburg.",
    "Könnten Sie das Fenster bitte schließen? Es ist kalt hier.",
    "Die Ernte war in diesem Jahr wegen der Trockenheit schlecht.",
    "Am Samstag findet auf dem Marktplatz ein Flohmarkt statt.",
    "Die Wissenschaftler warnen vor einem weiteren Anstieg des Meeresspiegels.",
    "Ich habe mein Passwort vergessen und kann mich nicht anmelden.",
    "Das Restaurant an der Ecke serviert die beste Suppe der Stadt.",
]

_SUMMARY_TEMPLATES = [
    "Summarize the following news paragraph in one sentence.\n\n{}",
    "Write a short summary of this text:\n{}",
    "Give me the main point of this article in a few words.\n\n{}",
    "TL;DR: {}",
    "Summarize for a busy reader:\n\n{}",
]

_NEWS_TRAIN = [
    "The city council of Riverton voted on Tuesday to close the old bridge on Main Street for repairs. Engineers found cracks in two of its supports last month. The work is expected to take six months, and buses will be rerouted through the east side of town.",
    "A small bakery in the village of Elmwood has won a national award for its sourdough bread. The owners, a married couple who opened the shop ten years ago, said they use flour from a mill just a few kilometres away. Orders have tripled since the announcement.",
    "Heavy snowfall closed several mountain roads in the northern region over the weekend. Rescue teams helped more than forty drivers who were stuck in their cars. Officials advised residents to stay at home until the roads are cleared.",
    "Scientists at a university research centre announced a new battery design that charges in under ten minutes. The battery uses a common salt instead of rare metals. The team said a commercial version could be ready within five years, but more testing is needed.",
    "The local football club signed a nineteen-year-old striker from a second-division team. The young player scored twenty-two goals last season. The club's coach said he hopes the signing will help the team avoid relegation.",
    "A new public library opened in the centre of Lakeside on Saturday. The building has a children's area, a cafe and a room with 3D printers. More than two thousand people visited on the first day.",
    "Farmers in the southern valley say this year's grape harvest is the earliest on record. A hot and dry summer made the grapes ripen weeks ahead of schedule. Wine makers expect a smaller but high-quality vintage.",
    "The national rail company announced that ticket prices will rise by four percent next year. The company said the increase is needed to pay for new trains and track maintenance. Passenger groups criticised the decision.",
    "A fire at a warehouse near the harbour was brought under control after five hours. No one was injured, but large amounts of paper and furniture were destroyed. The cause of the fire is still under investigation.",
    "The government has launched a program to plant one million trees in cities over the next three years. The trees are meant to provide shade and reduce summer temperatures. Residents can apply to have a tree planted on their street.",
    "A team of divers found the remains of a wooden ship off the coast that may be more than three hundred years old. Historians believe it was a trading vessel carrying spices. The wreck will be studied before any objects are brought to the surface.",
    "Hospital officials reported a sharp rise in flu cases this month. Doctors urged older people and those with chronic illnesses to get vaccinated. Waiting times in emergency rooms have increased as a result.",
    "A technology company announced it will open a new office in the city, creating about five hundred jobs. The mayor welcomed the decision, saying it shows the region is attractive to young professionals. Hiring will start in the spring.",
    "The annual marathon attracted a record twelve thousand runners this year. The winner completed the race in just over two hours and seven minutes. Several streets were closed for most of the day.",
    "Researchers found that students who sleep at least eight hours perform better on memory tests. The study followed three hundred teenagers for a full school year. The authors suggest schools should consider starting classes later.",
    "Officials confirmed that the city's water supply is safe to drink again after a three-day warning. The warning was issued when tests detected bacteria in one of the reservoirs. Bottled water was handed out to residents during that time.",
    "A popular music festival has been cancelled for the second year in a row due to financial problems. Organisers said rising costs for security and stage equipment made the event impossible. Ticket holders will receive a full refund.",
    "The zoo welcomed the birth of two snow leopard cubs last week. Snow leopards are endangered, and the zoo is part of an international breeding program. The cubs will be shown to the public in early summer.",
    "Shop owners in the old town complained that construction work has reduced the number of customers. The street is being repaved and will reopen in August. The city has offered small businesses a temporary cut in local fees.",
    "A new study says that walking for thirty minutes a day can lower the risk of heart disease by a fifth. The researchers analysed data from more than fifty thousand adults. They said even short walks bring benefits.",
    "Electric scooters will be banned from pavements in the city from next month. Riders must use bike lanes or the road instead. The council said the rule follows a rise in accidents involving pedestrians.",
    "The country's central bank kept interest rates unchanged on Thursday. The bank said inflation is falling slowly but remains above its target. Most economists had expected the decision.",
    "A retired teacher has walked across the entire country to raise money for a children's charity. The journey of more than one thousand kilometres took him three months. He has collected over eighty thousand euros in donations.",
    "Astronomers have spotted a comet that will be visible to the naked eye next month. It will be best seen just after sunset in the western sky. The comet last passed close to the Earth several thousand years ago.",
    "The regional airport will add direct flights to three new destinations this summer. Airline officials expect the routes to be popular with tourists. The airport has also renovated its main terminal.",
    "A strike by bus drivers left thousands of commuters without transport on Monday. The drivers are demanding higher wages and shorter shifts. Talks between the union and the company will continue this week.",
    "A chess club for seniors has become one of the most popular activities at the community centre. The club meets twice a week and now has more than sixty members. Organisers say the game keeps the mind active.",
    "Flood barriers along the river held back the water after days of heavy rain. Some fields and roads were flooded, but no homes were damaged. The barriers were built five years ago after a major flood.",
    "A software update caused problems for thousands of online banking customers on Wednesday. Many users could not log in for several hours. The bank apologised and said the problem has been fixed.",
    "The university will offer free evening classes in computer skills for adults over sixty. The courses cover email, video calls and online safety. Registration opens next week.",
]

_NEWS_HELDOUT = [
    "A dog that went missing during a storm was found two weeks later, fifty kilometres from its home. A farmer noticed the animal near his barn and contacted a local shelter. The dog was identified through its microchip and returned to its family.",
    "The city plans to turn an old factory site into a park with sports fields and a small lake. Construction will begin next year and cost about twelve million euros. Residents were asked to vote on the design online.",
    "Ticket sales for the national theatre reached their highest level in a decade. The director credited a series of new plays by young writers. The theatre will add extra performances in the autumn.",
    "A power cut left around thirty thousand homes without electricity for most of Sunday. The energy company said a damaged cable was to blame. Power was restored by the evening.",
    "Researchers have developed a cheap test that can detect a common plant disease in minutes. Farmers currently have to wait several days for laboratory results. The test could reduce crop losses in poorer countries.",
    "The town's oldest cinema will close at the end of the year after almost ninety years. The owner said visitor numbers have fallen sharply. A local group is trying to raise money to keep it open.",
    "Two hikers were rescued by helicopter after getting lost in fog on the mountain. They had called for help using a mobile phone. Both were cold but unharmed.",
    "A new law requires all new buildings to have solar panels on their roofs from next year. Supporters say the law will cut emissions, while builders warn it will raise costs.",
]

_INSTRUCTIONS_TRAIN = [
    "Write a haiku about autumn leaves.",
    "Explain what photosynthesis is in simple terms.",
    "List five tips for staying focused while studying.",
    "Write a short email to a colleague asking to move a meeting to Thursday.",
    "Give me a recipe for a simple tomato pasta.",
    "Explain the difference between weather and climate.",
    "Write a Python function that checks whether a number is prime.",
    "Describe how a bicycle works.",
    "What are the main causes of the French Revolution?",
    "Write a short story about a robot who learns to paint.",
    "Give three arguments for and three against school uniforms.",
    "Explain what a black hole is to a ten-year-old.",
    "Write a polite complaint letter about a late delivery.",
    "How do I make a good first impression at a job interview?",
    "Summarize the plot of Romeo and Juliet in three sentences.",
    "Write a product description for a reusable water bottle.",
    "Explain how vaccines work.",
    "Give me a weekly workout plan for a beginner.",
    "What is the difference between a list and a tuple in Python?",
    "Write a limerick about a cat who loves cheese.",
    "Explain why the sky is blue.",
    "Give me five ideas for a birthday party for a seven-year-old.",
    "Write a motivational message for someone starting a new job.",
    "Explain what inflation is and why it matters.",
    "Describe the water cycle step by step.",
    "Write a SQL query that returns the ten most recent orders from a table called orders.",
    "What should I pack for a three-day hiking trip?",
    "Explain the rules of chess briefly.",
    "Write a thank-you note to a teacher.",
    "How can I reduce my household's energy use?",
    "Give me a list of ten common English idioms and their meanings.",
    "Explain the difference between a virus and a bacterium.",
    "Write a short poem about the sea.",
    "How do I change a flat tire on a car?",
    "Write a tweet announcing the launch of a new coffee shop.",
    "Explain what machine learning is in two paragraphs.",
    "Give me tips for taking better photos with a phone.",
    "Write a dialogue between a customer and a waiter in a restaurant.",
    "What are the benefits of learning a second language?",
    "Write a JavaScript function that reverses a string.",
    "Explain how a bill becomes a law in a parliament.",
    "Create a shopping list for a week of healthy meals.",
    "Describe the city of Paris to someone who has never been there.",
    "Write an opening paragraph for a mystery novel.",
    "Explain compound interest with an example.",
    "Give me advice on how to start running.",
    "Write instructions for making a paper airplane.",
    "What is the capital of Australia, and why is it not Sydney?",
    "Rewrite this sentence to sound more formal: hey, can you send me that file asap?",
    "Explain what DNA is.",
]

_INSTRUCTIONS_HELDOUT = [
    "Write a haiku about a rainy morning in the city.",
    "Explain how a refrigerator keeps food cold.",
    "List four ways to save money on groceries.",
    "Write a short email inviting your team to a Friday lunch.",
    "Write a Python function that returns the factorial of a number.",
    "Explain what an earthquake is and why it happens.",
    "Give me a short packing list for a beach holiday.",
    "Write a short fable about a fox and a crow with a moral at the end.",
    "Explain the difference between renewable and non-renewable energy.",
]

_CHAT_TRAIN = [
    "Hi! How are you today?",
    "I'm feeling a bit bored. Any ideas for what I could do this evening?",
    "What's your favorite book and why?",
    "Can you tell me a joke?",
    "I just adopted a puppy. Do you have any advice?",
    "Do you think it's better to live in the city or the countryside?",
    "I have a job interview tomorrow and I'm nervous.",
    "What would you do if you could travel anywhere in the world?",
    "Tell me something interesting about octopuses.",
    "I can't decide whether to learn the guitar or the piano. What do you think?",
    "What's a good movie to watch with my family this weekend?",
    "Who are you?",
    "I'm trying to eat healthier. Where should I start?",
    "Why do people enjoy horror movies?",
    "I had a really long day at work.",
    "Can you recommend a hobby that doesn't cost much money?",
    "What do you think about artificial intelligence?",
    "My friend forgot my birthday. Should I be upset?",
    "What's the best way to learn to cook?",
    "Tell me a fun fact about space.",
    "I'm planning a trip to Japan. What should I see?",
    "How do I make new friends after moving to a new city?",
    "What's the meaning of life, in your opinion?",
    "Do you like music? What kind?",
    "I want to start a garden on my balcony. Any tips?",
    "Can you help me come up with a name for my cat?",
    "Is it a good idea to drink coffee late in the evening?",
    "What are some good habits to start in the morning?",
    "I keep procrastinating. How can I stop?",
    "What's the difference between a dolphin and a shark?",
    "Good morning! What's a nice way to start the day?",
    "Can you write me a short poem to cheer me up?",
    "I'm learning English. Can you tell me how to improve my speaking?",
    "What's something you find fascinating about history?",
    "Should I buy a new phone or repair my old one?",
    "How can I be more patient with my kids?",
    "Tell me about a famous scientist.",
    "It's raining all week. How can I stay in a good mood?",
    "What are your thoughts on working from home?",
    "I'd like to read more. How do I build a reading habit?",
]

_CHAT_HELDOUT = [
    "Hey there! What's new?",
    "I just finished a big exam and I don't know what to do with my free time.",
    "Can you tell me a riddle?",
    "My neighbour's dog barks all night. What can I do?",
    "What's a good board game for four people?",
    "I'm thinking about becoming a vegetarian. What should I know?",
    "Tell me something surprising about bees.",
    "How do I stay motivated when learning something difficult?",
    "What's your advice for a first trip abroad?",
]


# Topic x template requests (training only): widen the instruction and chat mix cheaply.
# None of these topics is the subject of a held-out instruction or chat message.
_TOPICS = [
    "the water cycle", "volcanoes", "the moon landing", "the history of maps", "the history of the printing press",
    "how vaccines work", "the Roman Empire", "electric cars", "learning a new language", "the human heart",
    "recycling plastic", "the solar system", "chess openings", "baking bread at home", "the Great Wall of China",
    "coral reefs", "the invention of the telephone", "time management", "public speaking", "the Olympic Games",
    "rainforests", "how the internet works", "the life of Marie Curie", "composting", "the northern lights",
    "penguins", "saving for retirement", "growing tomatoes", "the stock market", "jazz music",
    "the pyramids of Egypt", "artificial intelligence", "cloud computing", "sleep and health", "meditation",
    "the history of the bicycle", "deserts", "the first airplanes", "whales", "the Renaissance",
    "volunteering", "starting a small business", "writing a good resume", "the theory of evolution", "glaciers",
    "the periodic table", "hiking safety", "photography for beginners", "urban gardening", "the history of tea",
    "climate change", "social media and teenagers", "the Industrial Revolution", "black holes", "octopuses",
    "healthy breakfast ideas", "the piano", "Shakespeare's plays", "the Amazon river", "making friends as an adult",
    "remote work", "the history of money", "bridges and how they are built", "wind energy", "the immune system",
    "ancient Greece", "learning to code", "football tactics", "the Middle Ages", "desert animals",
    "keeping a journal", "the Moon's phases", "smartphones", "the history of chocolate", "tsunamis",
    "robots in factories", "a visit to Japan", "mountain climbing", "the Silk Road", "dinosaurs",
    "lighthouses", "first aid basics", "the French language", "origami", "the history of cinema",
    "butterflies", "cooking rice", "the Eiffel Tower", "friendship", "kindness at work",
]

_TOPIC_TEMPLATES = [
    ("instruction", "Explain {} in simple terms."),
    ("instruction", "Write a short paragraph about {}."),
    ("instruction", "Give me three interesting facts about {}."),
    ("instruction", "Write a short poem about {}."),
    ("instruction", "List the main points someone should know about {}."),
    ("instruction", "Write a short story that involves {}."),
    ("instruction", "Summarize what you know about {} in two sentences."),
    ("chat", "I've been reading about {} lately. What do you think about it?"),
    ("chat", "Can you tell me something about {}?"),
    ("chat", "My friend keeps talking about {}. Why is it interesting?"),
    ("chat", "What questions would you ask an expert on {}?"),
    ("chat", "I want to learn more about {}. Where should I start?"),
]

TOPIC_PROMPTS = [(kind, t.format(x)) for x in _TOPICS for kind, t in _TOPIC_TEMPLATES]


def _pair(templates, items, category, offset=0):
    return [(category, templates[(i + offset) % len(templates)].format(x)) for i, x in enumerate(items)]


TRAIN_PROMPTS = (
    _pair(_TRANSLATE_TEMPLATES, _GERMAN_TRAIN, "translation")
    + _pair(_SUMMARY_TEMPLATES, _NEWS_TRAIN, "summarization")
    + [("instruction", x) for x in _INSTRUCTIONS_TRAIN]
    + [("chat", x) for x in _CHAT_TRAIN]
)

HELDOUT_PROMPTS = (
    _pair(_TRANSLATE_TEMPLATES, _GERMAN_HELDOUT, "translation", offset=3)
    + _pair(_SUMMARY_TEMPLATES, _NEWS_HELDOUT, "summarization", offset=2)
    + [("instruction", x) for x in _INSTRUCTIONS_HELDOUT]
    + [("chat", x) for x in _CHAT_HELDOUT]
)


def chat_ids(tokenizer, user_message: str) -> list[int]:
    """Token ids of the chat-templated prompt (default system prompt, generation prompt added)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": user_message}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids
